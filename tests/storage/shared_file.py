"""A look into the shared database file from a test: how its values are stored."""

from __future__ import annotations

import os
from contextlib import closing
from pathlib import Path

import apsw


def stored(data_dir: str | os.PathLike[str]) -> tuple[int, int, int]:
    """(large_values rows, kv rows pointing at one, kv rows holding their bytes).

    Opened through apsw, as the engine opens it: closing a connection of another
    SQLite library would drop the engine's POSIX locks on the file.
    """
    with closing(apsw.Connection(str(Path(data_dir) / "objects.sqlite3"))) as conn:
        ((large, pointers, inline),) = conn.execute(
            "SELECT (SELECT count(*) FROM large_values),"
            " count(*) FILTER (WHERE typeof(value) = 'integer'),"
            " count(*) FILTER (WHERE typeof(value) = 'blob') FROM kv"
        ).fetchall()
    return int(large), int(pointers), int(inline)
