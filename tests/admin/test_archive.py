"""Export and import archives (roost.admin.archive) and backups (roost.admin.backup)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

import roost
from roost import codec
from roost.admin.archive import ArchiveError, export_archive, import_archive, verify_archive
from roost.admin.backup import backup_data_dir
from roost.errors import StorageError
from roost.ids import IdFactory
from roost.storage.check import check_data_dir
from roost.storage.engine import ExportedObject
from roost.storage.sqlite import SqliteEngine
from tests.test_codec import VALUES as CODEC_VALUES

# Every kind of value the codec accepts, and a value long enough to be kept out
# of the key table (large values).
VALUES: list[Any] = [*CODEC_VALUES, b"x" * 5000]
ALARM_MS = 4_102_444_800_000  # 2100-01-01: never due during a test


class Box(roost.DurableObject):
    async def fill(self, alarm: int | None) -> None:
        await self.ctx.storage.put({f"k{i:03}": v for i, v in enumerate(VALUES)})
        if alarm is not None:
            await self.ctx.storage.set_alarm(alarm)

    async def set(self, value: int) -> None:
        await self.ctx.storage.put("v", value)

    async def dump(self) -> tuple[dict[str, Any], int | None]:
        return dict(await self.ctx.storage.list()), await self.ctx.storage.get_alarm()

    async def alarm(self) -> None:
        return None


class Notes(roost.DurableObject, sql=True):
    async def fill(self, rows: int) -> None:
        sql = self.ctx.storage.sql
        sql.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, blob BLOB)")
        sql.exec("CREATE INDEX notes_body ON notes (body)")
        for i in range(rows):
            sql.exec("INSERT INTO notes (body, blob) VALUES (?, ?)", f"note {i}", bytes([i % 256]))
        await self.ctx.storage.put("kv-beside-sql", {"x": (1, 2)})
        await self.ctx.storage.set_alarm(ALARM_MS + 1)

    async def dump(self) -> tuple[list[Any], Any, int | None]:
        rows = self.ctx.storage.sql.exec("SELECT id, body, blob FROM notes ORDER BY id").raw()
        return (
            list(rows),
            await self.ctx.storage.get("kv-beside-sql"),
            await self.ctx.storage.get_alarm(),
        )

    async def alarm(self) -> None:
        return None


CLASSES = {"BOX": Box, "NOTES": Notes}


def fill(data_dir: Path, *, boxes: int = 3, secret: str | None = None) -> None:
    async def run() -> None:
        async with roost.Runtime(CLASSES, data_dir=data_dir, id_secret=secret) as runtime:
            for i in range(boxes):
                await runtime.env.BOX.get_by_name(f"box{i}").fill(ALARM_MS if i % 2 else None)
            await runtime.env.NOTES.get_by_name("notes").fill(50)

    asyncio.run(run())


def dump(data_dir: Path, *, boxes: int = 3, secret: str | None = None) -> list[Any]:
    async def run() -> list[Any]:
        async with roost.Runtime(CLASSES, data_dir=data_dir, id_secret=secret) as runtime:
            found: list[Any] = [await runtime.env.NOTES.get_by_name("notes").dump()]
            for i in range(boxes):
                found.append(await runtime.env.BOX.get_by_name(f"box{i}").dump())
            return found

    return asyncio.run(run())


def test_every_value_type_sql_objects_and_alarms_round_trip(tmp_path: Path) -> None:
    fill(tmp_path / "src")
    summary = export_archive(tmp_path / "src", tmp_path / "a.roost")
    assert (summary.kv_objects, summary.sql_objects, summary.entries) == (3, 1, 3 * len(VALUES))
    assert os.stat(tmp_path / "a.roost").st_mode & 0o777 == 0o600
    imported = import_archive(tmp_path / "a.roost", tmp_path / "dst")
    assert imported.objects == 4
    found = dump(tmp_path / "dst")  # reached by name: the IDs are the same ones
    rows, kv, alarm = found[0]
    assert rows == [(i + 1, f"note {i}", bytes([i % 256])) for i in range(50)]
    assert kv == {"x": (1, 2)} and alarm == ALARM_MS + 1
    for i, (values, box_alarm) in enumerate(found[1:]):
        assert box_alarm == (ALARM_MS if i % 2 else None)
        got = [values[f"k{j:03}"] for j in range(len(VALUES))]
        # Equal values of the same types (True == 1, so compare the encodings too).
        assert [codec.encode(v) for v in got] == [codec.encode(v) for v in VALUES]
        assert [type(v) for v in got] == [type(v) for v in VALUES]
    assert check_data_dir(tmp_path / "dst").clean
    assert found == dump(tmp_path / "src")


def alarm_entries(data_dir: Path) -> list[Any]:
    """The alarm index rows of box1 (a KV object) and notes (a SQL object)."""

    async def run() -> list[Any]:
        async with roost.Runtime(CLASSES, data_dir=data_dir) as runtime:
            engine = runtime.host.engine
            return [
                engine.alarm_entry("BOX", runtime.env.BOX.id_from_name("box1").hex),
                engine.alarm_entry("NOTES", runtime.env.NOTES.id_from_name("notes").hex),
            ]

    return asyncio.run(run())


def test_the_alarm_index_is_rebuilt_on_import(tmp_path: Path) -> None:
    fill(tmp_path / "src")
    export_archive(tmp_path / "src", tmp_path / "a.roost")
    import_archive(tmp_path / "a.roost", tmp_path / "dst")
    box, notes = alarm_entries(tmp_path / "dst")
    assert box is not None and box.due_ms == ALARM_MS and not box.sql
    assert notes is not None and notes.due_ms == ALARM_MS + 1 and notes.sql


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-1]), "is truncated"),
        (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "is truncated"),
        (lambda p: p.write_bytes(p.read_bytes()[:10]), "is truncated"),
        (lambda p: flip(p, p.stat().st_size // 2), "is damaged"),
        (lambda p: flip(p, 20), "is damaged"),
        (lambda p: p.write_bytes(p.read_bytes() + b"\0\0\0\0"), "is damaged"),
        (lambda p: p.write_bytes(b"PK" + p.read_bytes()[2:]), "is not a Roost archive"),
    ],
    ids=["last-byte", "half", "inside-magic", "flip-middle", "flip-header", "trailing", "magic"],
)
def test_a_damaged_or_truncated_archive_is_refused_and_changes_nothing(
    tmp_path: Path, damage: Any, message: str
) -> None:
    fill(tmp_path / "src")
    archive = tmp_path / "a.roost"
    export_archive(tmp_path / "src", archive)
    verify_archive(archive)  # intact: the control
    damage(archive)
    with pytest.raises(ArchiveError, match=message):
        verify_archive(archive)
    target = tmp_path / "dst"
    with pytest.raises(ArchiveError, match=message):
        import_archive(archive, target)
    assert not target.exists()
    assert sorted(tmp_path.iterdir()) == [archive, tmp_path / "src"]  # no staging left either
    target.mkdir()
    with pytest.raises(ArchiveError, match=message):
        import_archive(archive, target)
    assert list(target.iterdir()) == []


def test_import_refuses_a_target_that_holds_anything(tmp_path: Path) -> None:
    fill(tmp_path / "src")
    export_archive(tmp_path / "src", tmp_path / "a.roost")
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "notes.txt").write_text("mine")
    with pytest.raises(StorageError, match="is not empty"):
        import_archive(tmp_path / "a.roost", tmp_path / "dst")
    assert [p.name for p in (tmp_path / "dst").iterdir()] == ["notes.txt"]
    with pytest.raises(StorageError, match="is not empty"):
        import_archive(tmp_path / "a.roost", tmp_path / "src")


SECRET = "s" * 32
OTHER = "o" * 32


def test_the_archive_carries_a_stored_secret_and_import_adopts_it(tmp_path: Path) -> None:
    fill(tmp_path / "src")
    export_archive(tmp_path / "src", tmp_path / "a.roost")
    info = verify_archive(tmp_path / "a.roost")
    assert info.ids.kind == "stored" and info.ids.secret is not None
    assert "secret" not in repr(info)  # not printed by accident
    # A deployer's secret that is not the archive's would make every ID unreachable.
    with pytest.raises(StorageError, match="not the one the archive"):
        import_archive(tmp_path / "a.roost", tmp_path / "dst", id_secret=OTHER.encode())
    assert not (tmp_path / "dst").exists()
    import_archive(tmp_path / "a.roost", tmp_path / "dst")
    assert (tmp_path / "dst" / "ids.json").read_text() == (
        tmp_path / "src" / "ids.json"
    ).read_text()


def test_a_given_secret_stays_out_of_the_archive_and_import_needs_it(tmp_path: Path) -> None:
    fill(tmp_path / "src", secret=SECRET)
    export_archive(tmp_path / "src", tmp_path / "a.roost", id_secret=SECRET.encode())
    info = verify_archive(tmp_path / "a.roost")
    assert info.ids.kind == "given" and info.ids.secret is None
    assert SECRET.encode() not in (tmp_path / "a.roost").read_bytes()
    with pytest.raises(StorageError, match="set ROOST_ID_SECRET"):
        import_archive(tmp_path / "a.roost", tmp_path / "dst")
    with pytest.raises(StorageError, match="not the one the archive"):
        import_archive(tmp_path / "a.roost", tmp_path / "dst", id_secret=OTHER.encode())
    assert not (tmp_path / "dst").exists()
    import_archive(tmp_path / "a.roost", tmp_path / "dst", id_secret=SECRET.encode())
    assert dump(tmp_path / "dst", secret=SECRET) == dump(tmp_path / "src", secret=SECRET)


def test_export_of_one_namespace(tmp_path: Path) -> None:
    fill(tmp_path / "src")
    summary = export_archive(tmp_path / "src", tmp_path / "a.roost", namespaces=["NOTES"])
    assert (summary.kv_objects, summary.sql_objects) == (0, 1)
    assert verify_archive(tmp_path / "a.roost").namespaces == ["NOTES"]


def test_import_refuses_an_archive_of_another_app(tmp_path: Path) -> None:
    fill(tmp_path / "src")
    export_archive(tmp_path / "src", tmp_path / "a.roost")
    with pytest.raises(StorageError, match="'NOTES', which the app does not bind"):
        import_archive(tmp_path / "a.roost", tmp_path / "dst", bindings={"BOX": False})
    with pytest.raises(StorageError, match="SQL objects of 'NOTES', whose class in the app is not"):
        import_archive(
            tmp_path / "a.roost", tmp_path / "dst", bindings={"BOX": False, "NOTES": False}
        )
    with pytest.raises(
        StorageError, match="KV-only objects of 'BOX', whose class in the app is de"
    ):
        import_archive(
            tmp_path / "a.roost", tmp_path / "dst", bindings={"BOX": True, "NOTES": True}
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.roost", "src"]
    import_archive(tmp_path / "a.roost", tmp_path / "dst", bindings={"BOX": False, "NOTES": True})


def many(data_dir: Path, count: int) -> None:
    async def run() -> None:
        async with roost.Runtime(CLASSES, data_dir=data_dir, durability="process") as runtime:
            for start in range(0, count, 2000):
                calls = [
                    runtime.env.BOX.get_by_name(f"n{i}").set(i)
                    for i in range(start, min(count, start + 2000))
                ]
                await asyncio.gather(*calls)

    asyncio.run(run())


def round_trip_many(tmp_path: Path, count: int) -> None:
    many(tmp_path / "src", count)
    began = time.monotonic()
    exported = export_archive(tmp_path / "src", tmp_path / "a.roost")
    export_seconds = time.monotonic() - began
    began = time.monotonic()
    imported = import_archive(tmp_path / "a.roost", tmp_path / "dst")
    import_seconds = time.monotonic() - began
    assert exported.kv_objects == imported.kv_objects == count
    print(
        f"\n{count} objects: export {count / export_seconds:,.0f}/s, "
        f"import {count / import_seconds:,.0f}/s"
    )

    async def check() -> None:
        async with roost.Runtime(CLASSES, data_dir=tmp_path / "dst") as runtime:
            for i in (0, 1, count // 2, count - 1):
                values, _ = await runtime.env.BOX.get_by_name(f"n{i}").dump()
                assert values == {"v": i}

    asyncio.run(check())


def test_ten_thousand_objects(tmp_path: Path) -> None:
    round_trip_many(tmp_path, 10_000)


def test_a_hundred_thousand_objects(tmp_path: Path) -> None:
    round_trip_many(tmp_path, 100_000)


def test_backup_is_a_data_directory_that_checks_clean_and_restores(tmp_path: Path) -> None:
    fill(tmp_path / "src")
    summary = backup_data_dir(tmp_path / "src", tmp_path / "copy")
    assert summary.databases == 2
    assert check_data_dir(tmp_path / "copy").clean
    assert os.stat(tmp_path / "copy" / "ids.json").st_mode & 0o777 == 0o600
    # Restore: the copy, put in place of the data directory, serves the same objects.
    os.rename(tmp_path / "src", tmp_path / "old")
    os.rename(tmp_path / "copy", tmp_path / "src")
    assert dump(tmp_path / "src") == dump(tmp_path / "old")
    with pytest.raises(StorageError, match="not an empty directory"):
        backup_data_dir(tmp_path / "src", tmp_path / "old")


def test_catalogue_names_travel_with_the_objects(tmp_path: Path) -> None:
    # The runtime may not hand names to storage yet: write a named object
    # through the engine, as any caller of the seam does.
    async def write(data_dir: Path) -> str:
        engine = SqliteEngine(data_dir)
        engine.start(asyncio.get_running_loop())
        try:
            object_id = IdFactory("BOX", secret=engine.id_secret(None)).from_name("pears").hex
            entries = [("v", codec.encode(7))]
            await engine.import_objects(
                [ExportedObject("BOX", object_id, False, entries, None, "pears")]
            )
            return object_id
        finally:
            await engine.close()

    async def entry(data_dir: Path, object_id: str) -> Any:
        engine = SqliteEngine(data_dir)
        engine.start(asyncio.get_running_loop())
        try:
            return engine.catalogue_entry("BOX", object_id)
        finally:
            await engine.close()

    object_id = asyncio.run(write(tmp_path / "src"))
    assert asyncio.run(entry(tmp_path / "src", object_id)).name == "pears"  # the control
    export_archive(tmp_path / "src", tmp_path / "a.roost")
    import_archive(tmp_path / "a.roost", tmp_path / "dst")
    found = asyncio.run(entry(tmp_path / "dst", object_id))
    assert found is not None and found.name == "pears" and not found.sql


def test_a_live_sql_object_makes_the_copy_wait_then_fail_saying_why(tmp_path: Path) -> None:
    fill(tmp_path / "src")

    async def run() -> None:
        async with roost.Runtime(CLASSES, data_dir=tmp_path / "src") as runtime:
            await runtime.env.NOTES.get_by_name("notes").dump()  # live: its file is locked
            with pytest.raises(StorageError, match="stayed live in the server"):
                await asyncio.to_thread(
                    export_archive, tmp_path / "src", tmp_path / "a.roost", wait=0.2
                )

    asyncio.run(run())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no archive, no partial file
    export_archive(tmp_path / "src", tmp_path / "a.roost")  # evicted (closed): it copies
    assert verify_archive(tmp_path / "a.roost").sql_objects == 1


def test_many_sql_objects_round_trip_in_groups(tmp_path: Path) -> None:
    count = 130  # more than one group of SQL imports (SQL_IMPORT_GROUP)

    async def write() -> None:
        async with roost.Runtime(CLASSES, data_dir=tmp_path / "src") as runtime:
            await asyncio.gather(
                *(runtime.env.NOTES.get_by_name(f"n{i}").fill(i % 3 + 1) for i in range(count))
            )

    async def read(data_dir: Path) -> list[Any]:
        async with roost.Runtime(CLASSES, data_dir=data_dir) as runtime:
            return [await runtime.env.NOTES.get_by_name(f"n{i}").dump() for i in range(count)]

    asyncio.run(write())
    assert export_archive(tmp_path / "src", tmp_path / "a.roost").sql_objects == count
    assert import_archive(tmp_path / "a.roost", tmp_path / "dst").sql_objects == count
    found = asyncio.run(read(tmp_path / "dst"))
    assert [len(rows) for rows, _, _ in found] == [i % 3 + 1 for i in range(count)]
    assert found == asyncio.run(read(tmp_path / "src"))


def test_names_of_objects_written_through_a_runtime_survive(tmp_path: Path) -> None:
    fill(tmp_path / "src")
    export_archive(tmp_path / "src", tmp_path / "a.roost")
    import_archive(tmp_path / "a.roost", tmp_path / "dst")

    async def names() -> list[Any]:
        async with roost.Runtime(CLASSES, data_dir=tmp_path / "dst") as runtime:
            engine = runtime.host.engine
            found = []
            for ns, name in (("BOX", "box0"), ("BOX", "box2"), ("NOTES", "notes")):
                entry = engine.catalogue_entry(ns, runtime.env[ns].id_from_name(name).hex)
                found.append(None if entry is None else (entry.name, entry.sql))
            return found

    assert asyncio.run(names()) == [("box0", False), ("box2", False), ("notes", True)]
