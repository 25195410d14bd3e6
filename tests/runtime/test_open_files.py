"""Live SQL objects hold files open: the runtime keeps them within the process's limit."""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import Iterator

import pytest

import roost
from tests.conftest import quiesce

_gate: asyncio.Event | None = None


class Note(roost.DurableObject, sql=True):
    def __init__(self, ctx: roost.ObjectState, env: roost.Env) -> None:
        super().__init__(ctx, env)
        ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS notes (body TEXT NOT NULL)")

    async def add(self, body: str) -> None:
        self.ctx.storage.sql.exec("INSERT INTO notes VALUES (?)", body)

    async def bodies(self) -> list[str]:
        return [row["body"] for row in self.ctx.storage.sql.exec("SELECT body FROM notes")]


class Lazy(roost.DurableObject, sql=True):
    """Writes nothing until asked: a new activation of it looks idle."""

    async def add(self, body: str) -> None:
        self.ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS notes (body TEXT NOT NULL)")
        self.ctx.storage.sql.exec("INSERT INTO notes VALUES (?)", body)

    async def hold(self) -> None:
        assert _gate is not None
        await _gate.wait()  # an outside await: the object stays busy meanwhile


class Counter(roost.DurableObject):
    async def increment(self) -> int:
        value = (await self.ctx.storage.get("n") or 0) + 1
        await self.ctx.storage.put("n", value)
        return value


@pytest.fixture
def few_files() -> Iterator[int]:
    """The soft limit on open files lowered to 400 more than are open now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = len(os.listdir("/dev/fd")) + 400
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_past_the_cap_the_least_recently_used_idle_sql_object_goes(data_dir: str) -> None:
    objects = {"NOTE": Note, "COUNTER": Counter}
    async with roost.Runtime(objects, data_dir=data_dir, max_live_sql_objects=2) as rt:
        a, b, c = (rt.env.NOTE.get_by_name(name) for name in "abc")
        await a.add("x")
        await b.add("y")
        for name in "vwxyz":  # KV objects do not count against the SQL cap
            await rt.env.COUNTER.get_by_name(name).increment()
        await c.add("z")
        assert not rt.is_live("NOTE", a.id)
        assert rt.is_live("NOTE", b.id) and rt.is_live("NOTE", c.id)
        assert rt.statistics().live_objects == 7
        assert await a.bodies() == ["x"]  # back, with its data; now b is the oldest
        assert not rt.is_live("NOTE", b.id)


async def test_a_busy_sql_object_is_not_evicted_to_make_room(data_dir: str) -> None:
    global _gate
    _gate = asyncio.Event()
    async with roost.Runtime({"LAZY": Lazy}, data_dir=data_dir, max_live_sql_objects=1) as rt:
        a, b = rt.env.LAZY.get_by_name("a"), rt.env.LAZY.get_by_name("b")
        held = asyncio.create_task(a.hold())
        await quiesce()
        await b.add("y")  # over the cap, but a is busy and b is the one serving
        assert rt.is_live("LAZY", a.id) and rt.is_live("LAZY", b.id)
        assert rt.statistics().evictions == 0
        _gate.set()
        await held
        await rt.env.LAZY.get_by_name("c").add("z")  # now the idle ones can go
        assert not rt.is_live("LAZY", a.id) and not rt.is_live("LAZY", b.id)


async def test_the_default_cap_follows_the_open_files_limit(data_dir: str, few_files: int) -> None:
    async with roost.Runtime({"NOTE": Note}, data_dir=data_dir) as rt:
        assert rt.max_live_sql_objects == (few_files - 256) // 4


async def test_many_sql_objects_fit_in_few_files(data_dir: str, few_files: int) -> None:
    # 500 live SQL objects would need 1,000 files: the derived cap keeps the
    # process inside its limit, and every write is kept.
    async with roost.Runtime({"NOTE": Note}, data_dir=data_dir) as rt:
        for i in range(500):
            await rt.env.NOTE.get_by_name(f"n{i}").add(str(i))
        assert rt.statistics().live_objects <= (few_files - 256) // 4
        for i in range(0, 500, 50):
            assert await rt.env.NOTE.get_by_name(f"n{i}").bodies() == [str(i)]


async def test_running_out_of_files_is_named_in_the_error(data_dir: str, few_files: int) -> None:
    async with roost.Runtime({"NOTE": Note}, data_dir=data_dir, max_live_sql_objects=10_000) as rt:
        with pytest.raises(roost.StorageError, match="too many open files") as info:
            for i in range(500):
                await rt.env.NOTE.get_by_name(f"n{i}").add(str(i))
        assert "ulimit -n" in str(info.value)


def test_the_cap_must_be_positive() -> None:
    for bad in (0, -1, True):
        with pytest.raises(ValueError, match="max_live_sql_objects"):
            roost.Runtime({"NOTE": Note}, max_live_sql_objects=bad)
