"""rpc-inc: durable increments through in-process RPC, 64 concurrent callers."""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time

import uvloop

import roost

from ..harness import Figure, emit
from .inprocess import repeat


class Counter(roost.DurableObject):
    async def increment(self, by: int = 1) -> int:
        value = (await self.ctx.storage.get("value") or 0) + by
        await self.ctx.storage.put("value", value)
        return value


async def _measure(quick: bool) -> list[dict[str, object]]:
    calls = 20_000 if quick else 200_000
    callers = 64
    with tempfile.TemporaryDirectory(prefix="bench-rpc-") as data:
        async with roost.Runtime({"COUNTER": Counter}, data_dir=data) as rt:
            ns = rt.env.COUNTER
            hot = ns.get_by_name("hot")

            async def one_object(n: int) -> None:
                for _ in range(n):
                    await hot.increment()

            start = time.perf_counter()
            await asyncio.gather(*(one_object(calls // callers) for _ in range(callers)))
            one = calls // callers * callers / (time.perf_counter() - start)
            assert await hot.increment(0) == calls // callers * callers

            stubs = [ns.get_by_name(f"c{i}") for i in range(10_000)]
            await asyncio.gather(*(s.increment(0) for s in stubs))  # activate them all

            async def spread(n: int) -> None:
                for _ in range(n):
                    await random.choice(stubs).increment()

            start = time.perf_counter()
            await asyncio.gather(*(spread(calls // callers) for _ in range(callers)))
            spread_rate = calls // callers * callers / (time.perf_counter() - start)
    return [
        {"figure": "one object", "unit": "calls/s", "value": one},
        {"figure": "spread over 10,000", "unit": "calls/s", "value": spread_rate},
    ]


def run(quick: bool, runs: int, only: set[str]) -> list[Figure]:
    if "rpc-inc" not in only:
        return []
    return repeat("benchmarks.scenarios.rpc", "rpc-inc", quick=quick, runs=runs, units={})


if __name__ == "__main__":
    emit(uvloop.run(_measure("--quick" in sys.argv)))
