"""Measure SQL objects' commits and alarm delivery on this machine.

    .venv/bin/python benchmarks/sql_storage.py [--quick]

Prints one line per measurement (and writes benchmarks/results/sql_storage.json):

* ``sql_rpc_serial``: one SQL object, one RPC at a time, each inserting a row
  (every RPC waits until its commit is durable): commits/s.
* ``sql_rpc_parallel``: 200 SQL objects called concurrently: commits/s in all.
* ``sql_rpc_parallel_fsync_on_loop``: the same with the rejected design (the
  ``COMMIT`` itself fsyncs, on the event loop), for comparison.
* ``alarms_kv`` / ``alarms_sql``: alarms delivered per second, all due at once.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import roost
from roost.storage.objectdb import ObjectDatabase
from roost.storage.objectfiles import ObjectFiles
from roost.testing import ManualClock

QUICK = "--quick" in sys.argv


class Rows(roost.DurableObject, sql=True):
    def __init__(self, ctx: roost.ObjectState, env: roost.Env) -> None:
        super().__init__(ctx, env)
        ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS r (a INTEGER PRIMARY KEY, b TEXT)")

    async def add(self) -> None:
        self.ctx.storage.sql.exec("INSERT INTO r (b) VALUES (?)", "x" * 100)


class KvTick(roost.DurableObject):
    async def arm(self, due: int) -> None:
        await self.ctx.storage.set_alarm(due)

    async def alarm(self) -> None:
        pass


class SqlTick(KvTick, sql=True):
    pass


async def rpc_serial(data: Path, durability: str, n: int) -> float:
    async with roost.Runtime({"R": Rows}, data_dir=data, durability=durability) as rt:  # type: ignore[arg-type]
        stub = rt.env.R.get_by_name("one")
        await stub.add()
        start = time.perf_counter()
        for _ in range(n):
            await stub.add()
        return n / (time.perf_counter() - start)


async def rpc_parallel(data: Path, durability: str, rounds: int, objects: int = 200) -> float:
    async with roost.Runtime({"R": Rows}, data_dir=data, durability=durability) as rt:  # type: ignore[arg-type]
        stubs = [rt.env.R.get_by_name(f"o{i}") for i in range(objects)]
        await asyncio.gather(*(s.add() for s in stubs))

        async def loop(stub: roost.Stub) -> None:
            for _ in range(rounds):
                await stub.add()

        start = time.perf_counter()
        await asyncio.gather(*(loop(s) for s in stubs))
        return rounds * objects / (time.perf_counter() - start)


async def alarms(data: Path, cls: type[roost.DurableObject], n: int) -> float:
    clock = ManualClock()
    due = int(clock.time() * 1000) + 1000
    async with roost.Runtime({"T": cls}, data_dir=data, clock=clock, max_live_objects=2000) as rt:
        ns = rt.env.T
        for _ in range(n // 500):
            await asyncio.gather(*(ns.get(ns.new_unique_id()).arm(due) for _ in range(500)))
        start = time.perf_counter()
        await clock.advance(2)
        await rt.alarms.settle(limit=600)
        assert rt.alarms.statistics().delivered == n
        return n / (time.perf_counter() - start)


def fsync_on_loop(self: ObjectFiles, namespace: str, object_id: str, db: ObjectDatabase) -> None:
    # The rejected design: make the commit durable right here, on the event loop.
    import os

    fd = os.open(f"{self.path(namespace, object_id)}-wal", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def main() -> None:
    results: dict[str, Any] = {}
    n = 300 if QUICK else 3000
    rounds = 5 if QUICK else 30
    alarm_n = 2000 if QUICK else 20_000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for durability in ("full", "process"):
            results[f"sql_rpc_serial_{durability}"] = await rpc_serial(
                root / f"s-{durability}", durability, n
            )
            results[f"sql_rpc_parallel_{durability}"] = await rpc_parallel(
                root / f"p-{durability}", durability, rounds
            )
        original = ObjectFiles.after_commit
        ObjectFiles.after_commit = fsync_on_loop  # type: ignore[method-assign]
        try:
            results["sql_rpc_parallel_fsync_on_loop"] = await rpc_parallel(
                root / "loop", "full", rounds
            )
        finally:
            ObjectFiles.after_commit = original  # type: ignore[method-assign]
        results["alarms_kv"] = await alarms(root / "ak", KvTick, alarm_n)
        results["alarms_sql"] = await alarms(root / "as", SqlTick, alarm_n)
    for name, value in results.items():
        print(f"{name:36s} {value:10.0f} /s")
    out = Path(__file__).parent / "results" / "sql_storage.json"
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
