"""The shared database's page size: 1 KiB for a new one, kept for an existing one."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import roost


class Box(roost.DurableObject):
    async def put(self, value: int) -> int:
        self.ctx.storage.put("v", value)
        return value

    async def get(self) -> int:
        return int(await self.ctx.storage.get("v"))


def page_size(data: Path) -> int:
    # Closed at once: the engine reaches this file through apsw's own SQLite,
    # whose POSIX locks a connection of another SQLite library closing later would drop.
    with closing(sqlite3.connect(data / "objects.sqlite3")) as conn:
        return int(conn.execute("PRAGMA page_size").fetchone()[0])


async def test_a_new_database_has_small_pages(tmp_path: Path) -> None:
    async with roost.Runtime({"BOX": Box}, data_dir=tmp_path) as rt:
        await rt.env.BOX.get_by_name("a").put(1)
    assert page_size(tmp_path) == 1024


async def test_an_existing_database_keeps_its_pages_and_data(tmp_path: Path) -> None:
    with closing(sqlite3.connect(tmp_path / "objects.sqlite3")) as conn:
        conn.execute("PRAGMA page_size=4096")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE made_before (x)")
    async with roost.Runtime({"BOX": Box}, data_dir=tmp_path) as rt:
        await rt.env.BOX.get_by_name("a").put(7)
    async with roost.Runtime({"BOX": Box}, data_dir=tmp_path) as rt:
        assert await rt.env.BOX.get_by_name("a").get() == 7
    assert page_size(tmp_path) == 4096
