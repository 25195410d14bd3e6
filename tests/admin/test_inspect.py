"""roost.admin.inspect and the storage catalogue under it: listing by keyset,
showing one object, deleting one, the migration of older databases, and
reading a running server's storage."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import apsw
import pytest

import roost
from roost import codec
from roost.admin import (
    ObjectNotFound,
    delete_object,
    list_objects,
    render_value,
    show_object,
    value_to_json,
)
from roost.storage.catalogue import prefix_bound
from roost.storage.engine import CommitFuture, StorageEngine, WriteBatch
from roost.storage.memory import MemoryEngine
from roost.storage.sqlite import SqliteEngine
from roost.testing import ManualClock, advance


class Box(roost.DurableObject):
    async def put(self, values: dict[str, Any]) -> None:
        await self.ctx.storage.put(values)

    async def clear(self) -> None:
        await self.ctx.storage.delete_all()

    async def arm(self, when_ms: int) -> None:
        await self.ctx.storage.set_alarm(when_ms)

    async def alarm(self) -> None:
        pass


class Notes(roost.DurableObject, sql=True):
    async def add(self, body: str) -> None:
        sql = self.ctx.storage.sql
        sql.exec("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")
        sql.exec("INSERT INTO notes (body) VALUES (?)", body)
        await self.ctx.storage.put("count", 1)


@pytest.fixture(params=["memory", "sqlite"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StorageEngine]:
    made: StorageEngine = MemoryEngine() if request.param == "memory" else SqliteEngine(tmp_path)
    made.start(asyncio.get_running_loop())
    yield made
    await made.close()


def oid() -> str:
    return secrets.token_hex(32)


async def write(
    engine: StorageEngine,
    namespace: str,
    object_id: str,
    writes: dict[str, Any],
    *,
    name: str | None = None,
    clear: bool = False,
) -> None:
    batch = WriteBatch(clear=clear, writes={k: codec.encode(v) for k, v in writes.items()})
    done = CommitFuture(loop=asyncio.get_running_loop())
    engine.open_object(namespace, object_id, name=name).commit(batch, done)
    await done


async def test_written_objects_are_listed_in_id_order_with_names_and_times(
    engine: StorageEngine,
) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    ids = sorted(oid() for _ in range(5))
    for i, object_id in enumerate(ids):
        await write(engine, "BOX", object_id, {"a": i, "b": "x" * i}, name=f"n{i}")
    await write(engine, "OTHER", oid(), {"a": 1})
    page = list_objects(engine, "BOX")
    assert [o.object_id for o in page.objects] == ids
    assert [o.name for o in page.objects] == [f"n{i}" for i in range(5)]
    assert page.next_after is None
    first = page.objects[0]
    assert first.keys == 2 and not first.sql and not first.live
    assert first.created is not None and first.created >= before
    assert first.written is not None and first.written >= first.created
    # keys and encoded values: "a" + "b" and their bytes
    assert first.bytes == 2 + len(codec.encode(0)) + len(codec.encode(""))


async def test_pages_follow_each_other_by_cursor(engine: StorageEngine) -> None:
    ids = sorted(oid() for _ in range(25))
    for object_id in ids:
        await write(engine, "BOX", object_id, {"k": 1})
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page = list_objects(engine, "BOX", after=after, limit=10)
        pages += 1
        seen += [o.object_id for o in page.objects]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == ids and pages == 3


async def test_prefix_lists_names_in_order_and_pages(engine: StorageEngine) -> None:
    names = ["apple", "apricot", "apex", "banana", "ap", "b"]
    for name in names:
        await write(engine, "BOX", oid(), {"k": 1}, name=name)
    await write(engine, "BOX", oid(), {"k": 1})  # no name: not in a name listing
    page = list_objects(engine, "BOX", prefix="ap", limit=2)
    assert [o.name for o in page.objects] == ["ap", "apex"]
    assert page.next_after is not None
    rest = list_objects(engine, "BOX", prefix="ap", after=page.next_after, limit=10)
    assert [o.name for o in rest.objects] == ["apple", "apricot"]
    assert rest.next_after is None
    with pytest.raises(ValueError, match="not a cursor"):
        list_objects(engine, "BOX", after=page.next_after)  # a name cursor without prefix


def test_prefix_bound_is_the_least_string_past_the_prefix() -> None:
    assert prefix_bound("ab") == "ac"
    assert prefix_bound("a\U0010ffff") == "b"
    assert prefix_bound("\ud7ff") == "\ue000"
    assert prefix_bound("\U0010ffff") is None


async def test_delete_all_takes_the_object_out_of_the_listing(engine: StorageEngine) -> None:
    gone, kept = oid(), oid()
    await write(engine, "BOX", gone, {"k": 1})
    await write(engine, "BOX", kept, {"k": 1})
    await write(engine, "BOX", gone, {}, clear=True)
    assert [o.object_id for o in list_objects(engine, "BOX").objects] == [kept]
    await write(engine, "BOX", gone, {"k": 2})  # written again: back in the listing
    assert {o.object_id for o in list_objects(engine, "BOX").objects} == {gone, kept}


async def test_deletes_alone_enter_no_object(engine: StorageEngine) -> None:
    done = CommitFuture(loop=asyncio.get_running_loop())
    engine.open_object("BOX", oid()).commit(WriteBatch(writes={"never": None}), done)
    await done
    assert list_objects(engine, "BOX").objects == []


async def test_a_name_that_is_not_utf8_is_left_unrecorded(engine: StorageEngine) -> None:
    object_id = oid()
    await write(engine, "BOX", object_id, {"k": 1}, name="bad\ud800")
    [info] = list_objects(engine, "BOX").objects
    assert info.object_id == object_id and info.name is None


async def test_a_listing_page_reads_only_its_own_rows(tmp_path: Path) -> None:
    engine = SqliteEngine(tmp_path)
    engine.start(asyncio.get_running_loop())
    try:
        loop = asyncio.get_running_loop()
        futures = []
        for i in range(20_000):
            done = CommitFuture(loop=loop)
            store = engine.open_object("BOX", f"{i:064x}", name=f"n{i:05d}")
            store.commit(WriteBatch(writes={"k": b"\x01\x01"}), done)
            futures.append(done)
        await asyncio.gather(*futures)
        conn = engine._connection()
        fetched = 0

        def count(cursor: apsw.Cursor, row: Any) -> Any:
            nonlocal fetched
            fetched += 1
            return row

        conn.row_trace = count
        try:
            seen: list[str] = []
            after = None
            most = 0
            while True:
                fetched = 0
                page = list_objects(engine, "BOX", after=after, limit=500)
                most = max(most, fetched)
                seen += [o.object_id for o in page.objects]
                if page.next_after is None:
                    break
                after = page.next_after
            fetched = 0
            named = list_objects(engine, "BOX", prefix="n1999", limit=5)
            named_rows = fetched
        finally:
            conn.row_trace = None
        assert seen == [f"{i:064x}" for i in range(20_000)]
        # 501 catalogue rows (one to see whether a next page exists) and one count
        # per listed object: nowhere near the 20,000 objects.
        assert most <= 1001
        assert [o.name for o in named.objects] == [f"n1999{i}" for i in range(5)]
        assert named_rows <= 11
        plans = [
            " ".join(str(c) for c in row)
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT * FROM objects WHERE ns = 'BOX' AND name >= 'a' "
                "AND name < 'b' ORDER BY name, object LIMIT 5"
            )
        ]
        assert any(
            "USING INDEX objects_name" in p or "COVERING INDEX objects_name" in p for p in plans
        )
    finally:
        await engine.close()


async def test_show_decodes_values_and_reads_the_alarm(engine: StorageEngine) -> None:
    object_id = oid()
    values = {"s": "text", "n": 42, "b": b"\x00\xff", "l": [1, (2, 3)], "d": {"x": None}}
    await write(engine, "BOX", object_id, values, name="shown")
    batch = WriteBatch()
    batch.set_alarm(1_900_000_000_000)
    done = CommitFuture(loop=asyncio.get_running_loop())
    engine.open_object("BOX", object_id).commit(batch, done)
    await done
    view = show_object(engine, "BOX", object_id)
    assert dict(view.entries) == values
    assert [k for k, _ in view.entries] == sorted(values)
    assert view.alarm == datetime.fromtimestamp(1_900_000_000, UTC)
    assert view.info.name == "shown" and view.tables is None and not view.more_entries
    few = show_object(engine, "BOX", object_id, max_entries=2)
    assert len(few.entries) == 2 and few.more_entries
    with pytest.raises(ObjectNotFound):
        show_object(engine, "BOX", oid())


async def test_delete_removes_everything_of_one_object(engine: StorageEngine) -> None:
    gone, kept = oid(), oid()
    await write(engine, "BOX", gone, {"a": 1, "big": b"x" * 1000})
    await write(engine, "BOX", kept, {"a": 2})
    assert await delete_object(engine, "BOX", gone)
    assert [o.object_id for o in list_objects(engine, "BOX").objects] == [kept]
    assert engine.open_object("BOX", gone).read(["a", "big"]) == {}
    assert engine.open_object("BOX", kept).read(["a"]) == {"a": codec.encode(2)}
    assert not await delete_object(engine, "BOX", gone)  # nothing left to delete


@pytest.mark.parametrize("on_disk", [False, True])
async def test_through_a_runtime_sql_objects_show_tables_and_live_ones_are_refused(
    tmp_path: Path, on_disk: bool
) -> None:
    data = tmp_path if on_disk else None
    objects = {"BOX": Box, "NOTES": Notes}
    async with roost.Runtime(objects, data_dir=data, clock=ManualClock()) as rt:
        notes = rt.env.NOTES.get_by_name("n")
        await notes.add("one")
        await notes.add("two")
        box = rt.env.BOX.get_by_name("b")
        await box.put({"k": "v"})
        live = show_object(rt, "NOTES", name="n")
        assert live.info.live and live.tables is None and live.tables_note is not None
        with pytest.raises(roost.InvalidState, match="live"):
            await delete_object(rt, "BOX", name="b")
        assert dict(show_object(rt, "BOX", name="b").entries) == {"k": "v"}  # still there
        await advance(rt, 60)  # past idle_timeout: both are evicted
        assert not rt.is_live("NOTES", notes.id) and not rt.is_live("BOX", box.id)
        view = show_object(rt, "NOTES", notes.id)
        assert not view.info.live and view.info.sql
        assert [(t.name, t.rows) for t in view.tables or []] == [("notes", 2)]
        assert dict(view.entries) == {"count": 1}
        assert view.info.keys == 1
        [info] = list_objects(rt, "NOTES").objects
        assert info.sql and info.keys is None and info.bytes > 0
        assert await delete_object(rt, "BOX", name="b")
        await box.put({"again": 1})  # the object starts empty
        assert dict(show_object(rt, "BOX", name="b").entries) == {"again": 1}
        assert await delete_object(rt, "NOTES", name="n")
        assert list_objects(rt, "NOTES").objects == []


async def test_a_database_from_before_the_catalogue_lists_its_objects(tmp_path: Path) -> None:
    async with roost.Runtime({"BOX": Box, "NOTES": Notes}, data_dir=tmp_path) as rt:
        await rt.env.BOX.get_by_name("a").put({"k": 1})
        await rt.env.BOX.get_by_name("b").arm(1_900_000_000_000)  # an alarm and nothing else
        await rt.env.NOTES.get_by_name("n").add("x")
        expected = {
            "BOX": sorted(i.hex for i in rt.list_object_ids("BOX")),
            "NOTES": [rt.env.NOTES.id_from_name("n").hex],
        }
    conn = apsw.Connection(str(tmp_path / "objects.sqlite3"))
    conn.execute("DROP TABLE objects; UPDATE roost_meta SET value = 3 WHERE key = 'schema_version'")
    conn.close()
    engine = SqliteEngine(tmp_path)
    engine.start(asyncio.get_running_loop())
    try:
        for namespace, ids in expected.items():
            page = list_objects(engine, namespace)
            assert [o.object_id for o in page.objects] == ids
            assert all(o.created is None and o.name is None for o in page.objects)
        assert [o.sql for o in list_objects(engine, "NOTES").objects] == [True]
    finally:
        await engine.close()


async def test_a_read_only_engine_reads_beside_a_running_one(tmp_path: Path) -> None:
    async with roost.Runtime({"BOX": Box}, data_dir=tmp_path) as rt:
        box = rt.env.BOX.get_by_name("a")
        await box.put({"k": 1})
        reader = SqliteEngine(tmp_path, read_only=True)
        reader.start(asyncio.get_running_loop())
        try:
            [info] = list_objects(reader, "BOX").objects
            assert info.object_id == box.id.hex
            await box.put({"k": 2, "l": 3})
            assert dict(show_object(reader, "BOX", box.id).entries) == {"k": 2, "l": 3}
            with pytest.raises(roost.StorageError, match="reading only"):
                await delete_object(reader, "BOX", box.id)
        finally:
            await reader.close()
        assert await box.put({"m": 4}) is None  # the server's engine is untouched


def test_values_render_readably_and_to_json_without_loss() -> None:
    when = datetime(2026, 12, 4, 21, 0, tzinfo=UTC)
    value = {
        "s": "hi",
        "b": b"\x01\x02",
        "t": (1,),
        "when": when,
        "d": Decimal("1.5"),
        "u": UUID(int=1),
        1: {2},
    }
    text = render_value(value)
    assert "'s': 'hi'" in text and "bytes(2) 0102" in text and "(1,)" in text
    assert when.isoformat() in text and "Decimal('1.5')" in text
    assert value_to_json(value) == {
        "$map": [
            ["s", "hi"],
            ["b", {"$bytes": "AQI="}],
            ["t", {"$tuple": [1]}],
            ["when", {"$datetime": when.isoformat()}],
            ["d", {"$decimal": "1.5"}],
            ["u", {"$uuid": str(UUID(int=1))}],
            [1, {"$set": [2]}],
        ]
    }
    assert value_to_json({"a": [float("nan")]}) == {"a": [{"$float": "nan"}]}
    assert render_value("x" * 300).endswith("…")


class _Named(roost.DurableObject):
    async def put(self) -> None:
        await self.ctx.storage.put("k", 1)


@pytest.mark.parametrize("sql", [False, True])
async def test_names_of_objects_written_through_a_runtime_are_listed(
    tmp_path: Path, sql: bool
) -> None:
    cls = type("NamedSql", (_Named,), {}, sql=True) if sql else _Named
    async with roost.Runtime({"N": cls}, data_dir=tmp_path) as rt:
        for name in ("apple", "apricot", "banana"):
            await rt.env.N.get_by_name(name).put()
        await rt.env.N.get(rt.env.N.new_unique_id()).put()
    async with roost.Runtime({"N": cls}, data_dir=tmp_path) as rt:
        page = list_objects(rt, "N", prefix="ap")
        assert [o.name for o in page.objects] == ["apple", "apricot"]
        assert {o.object_id for o in page.objects} == {
            rt.env.N.id_from_name("apple").hex,
            rt.env.N.id_from_name("apricot").hex,
        }
        assert len(list_objects(rt, "N").objects) == 4
