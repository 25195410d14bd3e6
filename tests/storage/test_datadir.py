"""The data directory's marker: a lost or emptied shared database refuses to start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import roost
from roost import StorageError
from roost.storage.datadir import MARKER


class Counter(roost.DurableObject):
    async def increment(self) -> int:
        value = int(await self.ctx.storage.get("n") or 0) + 1
        await self.ctx.storage.put("n", value)
        return value


async def run_counter(data_dir: Path, times: int = 1) -> int:
    async with roost.Runtime({"C": Counter}, data_dir=data_dir) as runtime:
        stub = runtime.env.C.get_by_name("a")
        value = 0
        for _ in range(times):
            value = await stub.increment()
        return value


async def test_a_new_directory_gets_the_marker(tmp_path: Path) -> None:
    await run_counter(tmp_path)
    marker = json.loads((tmp_path / MARKER).read_text())
    assert marker == {
        "roost_data_dir": 1,
        "shared_database": "objects.sqlite3",
        "object_ids": "keyed",
    }
    assert await run_counter(tmp_path) == 2


@pytest.mark.parametrize("damage", ["missing", "empty"])
async def test_a_lost_shared_database_refuses_to_start(tmp_path: Path, damage: str) -> None:
    assert await run_counter(tmp_path, 3) == 3
    shared = tmp_path / "objects.sqlite3"
    if damage == "missing":
        shared.unlink()
    else:
        shared.write_bytes(b"")
    runtime = roost.Runtime({"C": Counter}, data_dir=tmp_path)
    with pytest.raises(StorageError) as caught:
        await runtime.start()
    message = str(caught.value)
    assert str(shared) in message
    assert ("is missing" if damage == "missing" else "is empty (0 bytes)") in message
    assert "Restore the data directory from a backup" in message
    assert "move" in message and "away" in message
    await runtime.close()
    # Nothing was created in its place, and the directory is not left locked.
    assert (damage == "missing") != shared.exists()
    with pytest.raises(StorageError, match="is (missing|empty)"):
        await roost.Runtime({"C": Counter}, data_dir=tmp_path).start()


async def test_a_directory_from_before_the_marker_keeps_working(tmp_path: Path) -> None:
    assert await run_counter(tmp_path, 2) == 2
    (tmp_path / MARKER).unlink()
    assert await run_counter(tmp_path) == 3
    assert (tmp_path / MARKER).exists()


async def test_without_a_marker_sql_object_files_show_the_loss(tmp_path: Path) -> None:
    class Notes(roost.DurableObject, sql=True):
        async def add(self) -> None:
            self.ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS t (x)")

    async with roost.Runtime({"N": Notes}, data_dir=tmp_path) as runtime:
        await runtime.env.N.get_by_name("a").add()
    (tmp_path / MARKER).unlink()
    (tmp_path / "objects.sqlite3").unlink()
    with pytest.raises(StorageError, match=r"objects/N/.*\.sqlite3 holds Roost data"):
        await roost.Runtime({"N": Notes}, data_dir=tmp_path).start()


async def test_a_damaged_marker_is_refused(tmp_path: Path) -> None:
    await run_counter(tmp_path)
    (tmp_path / MARKER).write_text("{not json")
    with pytest.raises(StorageError, match="not a Roost data directory marker"):
        await roost.Runtime({"C": Counter}, data_dir=tmp_path).start()
    (tmp_path / MARKER).write_text('{"roost_data_dir": 99}')
    with pytest.raises(StorageError, match="format 99"):
        await roost.Runtime({"C": Counter}, data_dir=tmp_path).start()


class Notes(roost.DurableObject, sql=True):
    async def add(self, text: str) -> int:
        sql = self.ctx.storage.sql
        sql.exec("CREATE TABLE IF NOT EXISTS notes (text TEXT)")
        sql.exec("INSERT INTO notes VALUES (?)", text)
        return int(sql.exec("SELECT count(*) AS n FROM notes").one()["n"])

    async def count(self) -> int:
        sql = self.ctx.storage.sql
        sql.exec("CREATE TABLE IF NOT EXISTS notes (text TEXT)")
        return int(sql.exec("SELECT count(*) AS n FROM notes").one()["n"])


@pytest.mark.parametrize("damage", ["missing", "empty"])
async def test_a_lost_sql_object_file_is_refused_not_read_as_empty(
    tmp_path: Path, damage: str
) -> None:
    async with roost.Runtime({"NOTES": Notes}, data_dir=tmp_path) as rt:
        assert await rt.env.NOTES.get_by_name("kept").add("a") == 1
        assert await rt.env.NOTES.get_by_name("lost").add("b") == 1
        lost = rt.engine.files.path("NOTES", rt.env.NOTES.id_from_name("lost").hex)  # type: ignore[attr-defined]
    assert lost.stat().st_size > 0
    if damage == "missing":
        lost.unlink()
    else:
        lost.write_bytes(b"")
    async with roost.Runtime({"NOTES": Notes}, data_dir=tmp_path) as rt:
        with pytest.raises(StorageError, match="its data was lost"):
            await rt.env.NOTES.get_by_name("lost").add("c")
        # The others are served, and an object that never wrote still starts empty.
        assert await rt.env.NOTES.get_by_name("kept").add("d") == 2
        assert await rt.env.NOTES.get_by_name("new").count() == 0
