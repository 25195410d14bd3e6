"""Values too long for a ``kv`` row live in ``large_values``; nothing leaks, old files move."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import roost
from roost.codec import encode
from roost.errors import StorageError
from roost.ids import IdFactory
from tests.storage.shared_file import stored

BIG = bytes(range(256)) * 40  # 10 KiB: stored out of line
SMALL = b"tiny"


class Box(roost.DurableObject):
    async def put(self, entries: dict[str, Any]) -> None:
        await self.ctx.storage.put(entries)

    async def get(self, keys: list[str]) -> dict[str, Any]:
        return await self.ctx.storage.get(keys)

    async def get_one(self, key: str) -> Any:
        return await self.ctx.storage.get(key)

    async def listing(self) -> dict[str, Any]:
        return await self.ctx.storage.list()

    async def delete(self, key: str) -> bool:
        return await self.ctx.storage.delete(key)

    async def delete_all(self) -> None:
        await self.ctx.storage.delete_all()


async def test_values_change_size_both_ways_and_leave_nothing_behind(tmp_path: Path) -> None:
    async with roost.Runtime({"BOX": Box}, data_dir=tmp_path) as rt:
        box = rt.env.BOX.get_by_name("a")
        await box.put({"a": SMALL, "b": BIG})
        assert stored(tmp_path) == (1, 1, 1)
        assert await box.get(["a", "b"]) == {"a": SMALL, "b": BIG}
        assert await box.get_one("b") == BIG

        await box.put({"a": BIG + b"a", "b": SMALL})  # small over large, large over small
        assert stored(tmp_path) == (1, 1, 1)
        await box.put({"a": BIG + b"again"})  # large over large
        assert stored(tmp_path) == (1, 1, 1)
        assert await box.listing() == {"a": BIG + b"again", "b": SMALL}

        assert await box.delete("a")
        assert stored(tmp_path) == (0, 0, 1)
        await box.put({"c": BIG, "d": BIG + b"d"})
        await box.delete_all()
        assert stored(tmp_path) == (0, 0, 0)

        await box.put({"e": BIG})
    async with roost.Runtime({"BOX": Box}, data_dir=tmp_path) as rt:
        box = rt.env.BOX.get_by_name("a")
        assert await box.listing() == {"e": BIG}
        await box.put({"f": BIG + b"f"})  # an id after the ones already used
        assert await box.get(["e", "f"]) == {"e": BIG, "f": BIG + b"f"}
    assert stored(tmp_path) == (2, 2, 0)


async def test_a_value_at_the_limit_stays_in_its_row(tmp_path: Path) -> None:
    fits = next(bytes(n) for n in range(200) if len(encode(bytes(n))) == 128)
    over = fits + b"!"
    async with roost.Runtime({"BOX": Box}, data_dir=tmp_path) as rt:
        box = rt.env.BOX.get_by_name("a")
        await box.put({"in": fits, "out": over})
        assert await box.get(["in", "out"]) == {"in": fits, "out": over}
    assert stored(tmp_path) == (1, 1, 1)


def make_version_2_database(data: Path, values: dict[str, bytes]) -> None:
    """A data directory as Roost wrote it before large values moved out of line."""
    with closing(sqlite3.connect(data / "objects.sqlite3")) as conn, conn:
        conn.execute("PRAGMA page_size=1024")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(
            """
            CREATE TABLE roost_meta (key TEXT PRIMARY KEY, value ANY) STRICT;
            CREATE TABLE kv (ns TEXT NOT NULL, object BLOB NOT NULL, key TEXT NOT NULL,
                value BLOB NOT NULL, PRIMARY KEY (ns, object, key)) WITHOUT ROWID;
            INSERT INTO roost_meta VALUES ('schema_version', 2);
            """
        )
        object_id = bytes.fromhex(str(IdFactory("BOX").from_name("a")))
        conn.executemany(
            "INSERT INTO kv VALUES ('BOX', ?, ?, ?)",
            [(object_id, key, encode(value)) for key, value in values.items()],
        )


async def test_a_version_2_database_moves_its_large_values_out(tmp_path: Path) -> None:
    make_version_2_database(tmp_path, {"big": BIG, "small": SMALL, "big2": BIG + b"2"})
    async with roost.Runtime({"BOX": Box}, data_dir=tmp_path) as rt:
        box = rt.env.BOX.get_by_name("a")
        assert await box.listing() == {"big": BIG, "big2": BIG + b"2", "small": SMALL}
        await box.put({"big3": BIG + b"3"})
        await box.put({"big": SMALL})
    assert stored(tmp_path) == (2, 2, 2)
    with closing(sqlite3.connect(tmp_path / "objects.sqlite3")) as conn:
        version = conn.execute("SELECT value FROM roost_meta WHERE key = 'schema_version'")
        assert version.fetchone()[0] == 4  # 4: the catalogue was added after the move


async def test_the_move_walks_a_database_of_many_large_values(tmp_path: Path) -> None:
    # More keys than one page of the move (1,000), and small ones between them.
    values = {f"k{i:04d}": (bytes([i % 256]) * 200 if i % 3 else SMALL) for i in range(2600)}
    make_version_2_database(tmp_path, values)
    async with roost.Runtime({"BOX": Box}, data_dir=tmp_path) as rt:
        assert await rt.env.BOX.get_by_name("a").listing() == values
    large = sum(1 for value in values.values() if value != SMALL)
    assert stored(tmp_path) == (large, large, len(values) - large)


async def test_a_database_from_a_newer_roost_is_refused(tmp_path: Path) -> None:
    make_version_2_database(tmp_path, {})
    with closing(sqlite3.connect(tmp_path / "objects.sqlite3")) as conn, conn:
        conn.execute("UPDATE roost_meta SET value = 5 WHERE key = 'schema_version'")
    with pytest.raises(StorageError, match="schema version 5; this Roost reads version 4"):
        async with roost.Runtime({"BOX": Box}, data_dir=tmp_path):
            pass


class SqlBox(roost.DurableObject, sql=True):
    async def put(self, entries: dict[str, Any]) -> None:
        await self.ctx.storage.put(entries)

    async def listing(self) -> dict[str, Any]:
        return await self.ctx.storage.list()


def kv_table_sql(data: Path) -> str:
    (path,) = (data / "objects").rglob("*.sqlite3")
    with closing(sqlite3.connect(path)) as conn:
        return str(
            conn.execute("SELECT sql FROM sqlite_master WHERE name = '_roost_kv'").fetchone()[0]
        )


async def test_a_sql_objects_kv_table_written_without_rowid_is_rebuilt(tmp_path: Path) -> None:
    values = {"big": BIG, "small": SMALL, "big2": BIG + b"2"}
    async with roost.Runtime({"BOX": SqlBox}, data_dir=tmp_path) as rt:
        await rt.env.BOX.get_by_name("a").put(values)
    assert "WITHOUT ROWID" not in kv_table_sql(tmp_path).upper()
    # Rewrite the table as Roost wrote it before: the value inside the B-tree key.
    (path,) = (tmp_path / "objects").rglob("*.sqlite3")
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.executescript(
            """
            CREATE TABLE _roost_kv_old (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
            INSERT INTO _roost_kv_old SELECT key, value FROM _roost_kv;
            DROP TABLE _roost_kv;
            ALTER TABLE _roost_kv_old RENAME TO _roost_kv;
            """
        )
    assert "WITHOUT ROWID" in kv_table_sql(tmp_path).upper()
    async with roost.Runtime({"BOX": SqlBox}, data_dir=tmp_path) as rt:
        box = rt.env.BOX.get_by_name("a")
        assert await box.listing() == dict(sorted(values.items()))
        await box.put({"later": SMALL})
    assert "WITHOUT ROWID" not in kv_table_sql(tmp_path).upper()
    async with roost.Runtime({"BOX": SqlBox}, data_dir=tmp_path) as rt:
        assert await rt.env.BOX.get_by_name("a").listing() == dict(
            sorted({**values, "later": SMALL}.items())
        )
