"""What a data directory must hold: the marker ``roost.json``, written at creation.

SQLite creates a database file that is missing and reads a zero-length one as
an empty database, so without a record of what should be there, a lost or
truncated ``objects.sqlite3`` looked like fresh storage: every object read
empty, and new writes went on over the loss.  The marker records that the
directory holds Roost's data and in what format::

    {"roost_data_dir": 1, "shared_database": "objects.sqlite3", "object_ids": "keyed"}

With the marker present, a missing or zero-length shared database refuses to
start (:func:`inspect`).  A directory written before the marker existed gets it
on its first start, once its database has opened as non-empty; one with no
marker, no database and no other data is new.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ..errors import StorageError

__all__ = ["MARKER", "DataDirState", "holds_data", "ids_keyed", "inspect", "write_marker"]

MARKER: Final = "roost.json"
#: The data directory's layout version, as the marker records it.
FORMAT: Final = 1
SHARED_DATABASE: Final = "objects.sqlite3"
#: The secret that keys object IDs (:mod:`.idsecret`).
ID_FILE: Final = "ids.json"
#: SQL objects' own databases live under this directory (:mod:`.objectfiles`).
OBJECT_FILES: Final = "objects"


@dataclass(frozen=True, slots=True)
class DataDirState:
    """What :func:`inspect` found."""

    #: True when the directory holds no Roost data yet.
    new: bool
    #: True when the marker is there (else it is written once the database is open).
    marked: bool


def inspect(directory: Path) -> DataDirState:
    """Check that ``directory`` holds what its marker says; raise :class:`StorageError` if not.

    The error names the file and says how to recover.
    """
    shared = directory / SHARED_DATABASE
    size = _size(shared)
    marker = directory / MARKER
    if marker.exists():
        _read_marker(marker)
        if size is None or size == 0:
            raise StorageError(_lost(shared, size, f"{marker} says it must hold Roost's data"))
        return DataDirState(new=False, marked=True)
    if size:
        return DataDirState(new=False, marked=False)  # from before the marker
    other = _other_data(directory)
    if other is not None:
        raise StorageError(_lost(shared, size, f"{other} holds Roost data"))
    return DataDirState(new=True, marked=False)


def holds_data(directory: Path) -> bool:
    """Whether ``directory`` holds Roost data (or its marker says it must)."""
    return (
        (directory / MARKER).exists()
        or bool(_size(directory / SHARED_DATABASE))
        or _other_data(directory) is not None
    )


def ids_keyed(directory: Path) -> bool:
    """Whether the marker records that the directory's object IDs are keyed
    (:mod:`.idsecret`): then a missing ``ids.json`` was lost, not never made."""
    try:
        content = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(content, dict) and content.get("object_ids") == "keyed"


def write_marker(directory: Path) -> None:
    """Write the marker durably (once the shared database is durable itself)."""
    record: dict[str, object] = {"roost_data_dir": FORMAT, "shared_database": SHARED_DATABASE}
    if (directory / ID_FILE).exists():
        record["object_ids"] = "keyed"
    content = json.dumps(record)
    temporary = directory / f".{MARKER}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, (content + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, directory / MARKER)
    sync_directory(directory)


def sync_directory(directory: Path) -> None:
    """``fsync`` a directory, so the names created in it survive a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_marker(marker: Path) -> None:
    try:
        content = json.loads(marker.read_text())
        version = content["roost_data_dir"]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise StorageError(
            f"{marker} is not a Roost data directory marker ({exc}); restore it from a "
            f'backup, or write {{"roost_data_dir": {FORMAT}}} into it if the directory is '
            "otherwise intact"
        ) from None
    if not isinstance(version, int) or version > FORMAT:
        raise StorageError(
            f"{marker} records data directory format {version!r}; this Roost reads "
            f"format {FORMAT}: use a newer Roost"
        )


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _other_data(directory: Path) -> Path | None:
    """A file that shows the directory held Roost data, if there is one."""
    wal = directory / f"{SHARED_DATABASE}-wal"
    if _size(wal):
        return wal
    files = directory / OBJECT_FILES
    if files.is_dir():
        for found in files.glob("*/*/*/*.sqlite3"):
            return found
    return None


def _lost(shared: Path, size: int | None, why: str) -> str:
    state = "is missing" if size is None else "is empty (0 bytes)"
    return (
        f"the shared database {shared} {state}, but {why}: its data was lost or moved, "
        "and starting would silently begin again from nothing. Restore the data "
        f"directory from a backup; or, to start with empty storage on purpose, move "
        f"{shared.parent} away (or delete it)"
    )
