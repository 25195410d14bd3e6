"""rpc-inc: durable increments through in-process RPC, 64 concurrent callers.

Besides calls/s, each half reports the process's CPU per call (all threads) and
how busy it kept its core (CPU time over wall time).  Every caller waits for its
increment's ``fsync`` before its next call, so the rate is bound by the CPU or by
the disk: a core busy well under 100 % means the run waited on ``fsync``s, and
its CPU per call still compares across runs.

Each half is timed after a warm-up of the same calls, as the HTTP scenarios
are: a fresh database's write-ahead log first grows into new file space, and an
``fsync`` that must also record new blocks took about twice as long on this
machine's disk as one over blocks written before (benchmarks/README.md).  A
server pays that once per data directory, not on every second of its life.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable

import uvloop

import roost

from ..harness import SERVER_CORE, Figure, core_ticks, emit, steal_percent
from .inprocess import repeat

#: Unit and direction (higher is better?) of the figures besides the rates.
_UNITS = {
    "one object: CPU per call": ("µs", False),
    "one object: core busy": ("%", True),
    "spread over 10,000: CPU per call": ("µs", False),
    "spread over 10,000: core busy": ("%", True),
}


class Counter(roost.DurableObject):
    async def increment(self, by: int = 1) -> int:
        value = (await self.ctx.storage.get("value") or 0) + by
        await self.ctx.storage.put("value", value)
        return value


async def _warm(seconds: float, callers: int, call: Callable[[], Awaitable[object]]) -> int:
    """Run ``callers`` loops of ``call`` for ``seconds``, untimed; how many calls ran."""
    calls = 0
    stop = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal calls
        while time.perf_counter() < stop:
            await call()
            calls += 1

    await asyncio.gather(*(caller() for _ in range(callers)))
    return calls


async def _timed(
    name: str, each: int, callers: int, call: Callable[[], Awaitable[object]]
) -> list[dict[str, object]]:
    """``callers`` concurrent loops of ``each`` calls; the figures of ``name``."""

    async def caller() -> None:
        for _ in range(each):
            await call()

    done = each * callers
    ticks, cpu, start = core_ticks(SERVER_CORE), time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    steal = steal_percent(ticks, core_ticks(SERVER_CORE))
    return [
        {"figure": name, "unit": "calls/s", "value": done / wall, "steal_pct": steal},
        {"figure": f"{name}: CPU per call", "value": cpu / done * 1e6, "steal_pct": steal},
        {"figure": f"{name}: core busy", "value": 100 * cpu / wall, "steal_pct": steal},
    ]


async def _measure(quick: bool) -> list[dict[str, object]]:
    callers = 64
    each = (20_000 if quick else 200_000) // callers
    warm = 0.1 if quick else 1.0
    with tempfile.TemporaryDirectory(prefix="bench-rpc-") as data:
        async with roost.Runtime({"COUNTER": Counter}, data_dir=data) as rt:
            ns = rt.env.COUNTER
            hot = ns.get_by_name("hot")
            warmed = await _warm(warm, callers, lambda: hot.increment())
            figures = await _timed("one object", each, callers, lambda: hot.increment())
            assert await hot.increment(0) == warmed + each * callers

            stubs = [ns.get_by_name(f"c{i}") for i in range(10_000)]
            await asyncio.gather(*(s.increment(0) for s in stubs))  # activate them all

            def spread() -> Awaitable[object]:
                call: Awaitable[object] = random.choice(stubs).increment()
                return call

            await _warm(warm, callers, spread)
            figures += await _timed("spread over 10,000", each, callers, spread)
    return figures


def run(quick: bool, runs: int, only: set[str]) -> list[Figure]:
    if "rpc-inc" not in only:
        return []
    return repeat("benchmarks.scenarios.rpc", "rpc-inc", quick=quick, runs=runs, units=_UNITS)


if __name__ == "__main__":
    emit(uvloop.run(_measure("--quick" in sys.argv)))
