"""Damaged database pages surface as StorageError, and check_data_dir finds them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import apsw
import pytest

import roost
from roost import StorageError
from roost.storage.check import check_data_dir
from roost.testing import run_in_object

KEYS = 2000


class Bag(roost.DurableObject):
    async def fill(self) -> None:
        await self.ctx.storage.put({f"k{i:05}": "v" * 60 for i in range(KEYS)})

    async def count(self) -> int:
        return len(await self.ctx.storage.list())


class Notes(roost.DurableObject, sql=True):
    async def fill(self) -> None:
        sql = self.ctx.storage.sql
        sql.exec("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")
        sql.exec(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 3000)"
            " INSERT INTO notes (body) SELECT printf('%.80c', 'n') FROM c"
        )

    async def count(self) -> int:
        return int(self.ctx.storage.sql.exec("SELECT count(body) AS n FROM notes").one()["n"])


class SqlBag(Bag, sql=True):
    """KV data in a SQL object's own file."""


OBJECTS = {"BAG": Bag, "NOTES": Notes, "SQLBAG": SqlBag}


def corrupt(path: Path) -> None:
    """Overwrite eight pages in the middle of ``path`` (the file must hold no WAL)."""
    assert not Path(f"{path}-wal").exists() or os.path.getsize(f"{path}-wal") == 0
    size = path.stat().st_size
    assert size > 64 * 1024
    with path.open("r+b") as f:
        f.seek(size // 2 // 4096 * 4096)
        f.write(b"\xa5" * 8 * 4096)


async def filled(data_dir: Path) -> None:
    async with roost.Runtime(OBJECTS, data_dir=data_dir) as runtime:
        await runtime.env.BAG.get_by_name("a").fill()
        await runtime.env.NOTES.get_by_name("a").fill()
        assert await runtime.env.BAG.get_by_name("a").count() == KEYS


def sql_file(data_dir: Path) -> Path:
    [path] = (data_dir / "objects").glob("NOTES/*/*/*.sqlite3")
    return path


async def test_a_clean_directory_checks_clean(tmp_path: Path) -> None:
    await filled(tmp_path)
    report = check_data_dir(tmp_path)
    assert report.clean, report.problems
    assert report.databases == 2
    assert report.summary() == "ok: 2 databases checked, no problems"
    async with roost.Runtime(OBJECTS, data_dir=tmp_path) as runtime:
        assert await runtime.env.NOTES.get_by_name("a").count() == 3000


async def test_a_damaged_shared_database_is_a_storage_error(tmp_path: Path) -> None:
    await filled(tmp_path)
    corrupt(tmp_path / "objects.sqlite3")
    async with roost.Runtime(OBJECTS, data_dir=tmp_path) as runtime:
        with pytest.raises(StorageError, match="is damaged.*roost check") as caught:
            await runtime.env.BAG.get_by_name("a").count()
        assert not isinstance(caught.value, apsw.Error)
        # The other objects go on.
        assert await runtime.env.NOTES.get_by_name("a").count() == 3000
    report = check_data_dir(tmp_path)
    assert not report.clean
    assert {p.path for p in report.problems} == {tmp_path / "objects.sqlite3"}
    assert report.summary().startswith("damaged: ")


async def test_a_damaged_sql_object_file_is_a_storage_error(tmp_path: Path) -> None:
    await filled(tmp_path)
    corrupt(sql_file(tmp_path))
    async with roost.Runtime(OBJECTS, data_dir=tmp_path) as runtime:
        stub = runtime.env.NOTES.get_by_name("a")
        for _ in range(2):  # the object was reset, and its next activation fails alike
            with pytest.raises(StorageError, match="malformed") as caught:
                await stub.count()
            assert not isinstance(caught.value, apsw.Error)

        async def kv(obj: Any, ctx: roost.ObjectState) -> Any:
            return await ctx.storage.get("absent")

        # Reads that miss the damaged pages still work.
        assert await run_in_object(stub, kv) is None
        assert await runtime.env.BAG.get_by_name("a").count() == KEYS
    report = check_data_dir(tmp_path)
    assert {p.path for p in report.problems} == {sql_file(tmp_path)}


async def test_damaged_kv_data_of_a_sql_object_is_a_storage_error(tmp_path: Path) -> None:
    async with roost.Runtime(OBJECTS, data_dir=tmp_path) as runtime:
        await runtime.env.SQLBAG.get_by_name("a").fill()
    [path] = (tmp_path / "objects").glob("SQLBAG/*/*/*.sqlite3")
    corrupt(path)
    async with roost.Runtime(OBJECTS, data_dir=tmp_path) as runtime:
        with pytest.raises(StorageError, match="malformed.*roost check") as caught:
            await runtime.env.SQLBAG.get_by_name("a").count()
        assert not isinstance(caught.value, apsw.Error)


async def test_check_refuses_a_directory_in_use(tmp_path: Path) -> None:
    async with roost.Runtime(OBJECTS, data_dir=tmp_path):
        with pytest.raises(StorageError, match="in use by another Roost process"):
            check_data_dir(tmp_path)
