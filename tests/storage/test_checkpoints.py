"""The shared WAL starts over while writes never pause, and nothing is lost by it.

SQLite restarts a WAL only when a write begins after a checkpoint copied every
frame; the engine's quiet passes (commits held for a moment) make that happen
under steady load too (``roost.storage.walsync``).
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

import roost
from roost.storage import Durability, SqliteEngine
from tests.conftest import quiesce


class Counter(roost.DurableObject):
    async def increment(self) -> int:
        value = int(await self.ctx.storage.get("value") or 0) + 1
        self.ctx.storage.put("value", value)
        return value

    async def read(self) -> int:
        return int(await self.ctx.storage.get("value") or 0)


def wal_generation(data: Path) -> int:
    """The WAL header's checkpoint sequence number: it counts the WAL's restarts."""
    with open(data / "objects.sqlite3-wal", "rb") as wal:
        header = wal.read(32)
    return int.from_bytes(header[12:16], "big")


async def steady_load(
    rt: roost.Runtime, names: list[str], acked: dict[str, int], until: asyncio.Event
) -> None:
    """64 callers incrementing counters at random: some commit is always in flight."""

    async def caller() -> None:
        while not until.is_set():
            name = random.choice(names)
            value = await rt.env.COUNTER.get_by_name(name).increment()
            acked[name] = max(acked.get(name, 0), value)

    await asyncio.gather(*(caller() for _ in range(64)))


@pytest.mark.parametrize("durability", ["full", "process"])
async def test_the_wal_starts_over_under_steady_load_and_keeps_every_write(
    tmp_path: Path, durability: Durability
) -> None:
    engine = SqliteEngine(tmp_path, durability=durability, checkpoint_interval=0.05)
    names = [f"c{i}" for i in range(500)]
    acked: dict[str, int] = {}
    stop = asyncio.Event()
    async with roost.Runtime({"COUNTER": Counter}, engine=engine) as rt:
        load = asyncio.create_task(steady_load(rt, names, acked, stop))
        commits_before = engine.commits
        generations = []
        for _ in range(20):
            await asyncio.sleep(0.1)
            generations.append(wal_generation(tmp_path))
        # Read while the callers still run: the load never paused meanwhile.
        commits = engine.commits - commits_before
        stop.set()
        await load
    # With durability="process" no commit ever waits for the disk, so commits
    # follow each other on every turn of the loop: without the quiet passes
    # this WAL never starts over.  (With "full", the fsync waits leave gaps.)
    assert commits > 50, "too little load to prove anything"
    assert generations[-1] >= 3, f"the WAL never started over under load: {generations}"
    async with roost.Runtime({"COUNTER": Counter}, data_dir=tmp_path) as rt:
        for name, value in acked.items():
            assert await rt.env.COUNTER.get_by_name(name).read() == value, name


async def test_commits_held_by_a_quiet_pass_still_commit_when_the_engine_closes(
    tmp_path: Path,
) -> None:
    engine = SqliteEngine(tmp_path)
    async with roost.Runtime({"COUNTER": Counter}, engine=engine) as rt:
        stub = rt.env.COUNTER.get_by_name("held")
        assert await stub.increment() == 1
        engine._hold_commits(True)  # as the checkpoint thread's quiet pass does
        call = asyncio.create_task(stub.increment())
        await quiesce()
        assert not call.done(), "a held commit released its output"
        commits = engine.commits
        engine._hold_commits(False)
        assert await call == 2
        assert engine.commits == commits + 1
        engine._hold_commits(True)
        late = asyncio.create_task(stub.increment())
        await quiesce()
        assert not late.done()
    assert await late == 3
    async with roost.Runtime({"COUNTER": Counter}, data_dir=tmp_path) as rt:
        assert await rt.env.COUNTER.get_by_name("held").read() == 3


def test_the_checkpoint_interval_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="checkpoint_interval must be positive"):
        SqliteEngine(tmp_path, checkpoint_interval=0)
