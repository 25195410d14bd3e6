"""million-objects: one durable write to each of 1,000,000 objects through RPC."""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import sys
import tempfile
import time

import uvloop

import roost
from roost.runtime import ManualClock

from ..harness import Figure, emit
from .inprocess import repeat


class Cell(roost.DurableObject):
    async def set(self, value: int) -> None:
        await self.ctx.storage.put("v", value)


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def _measure(quick: bool) -> list[dict[str, object]]:
    count = 20_000 if quick else 1_000_000
    callers = 64
    clock = ManualClock()
    with tempfile.TemporaryDirectory(prefix="bench-million-") as data:
        async with roost.Runtime({"CELL": Cell}, data_dir=data, clock=clock) as rt:
            ns = rt.env.CELL
            next_index = iter(range(count))

            async def caller() -> None:
                for i in next_index:
                    await ns.get_by_name(f"cell-{i}").set(i)

            start = time.perf_counter()
            await asyncio.gather(*(caller() for _ in range(callers)))
            elapsed = time.perf_counter() - start
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            live_before = rt.statistics().live_objects
            await clock.advance(rt.idle_timeout + 5)
            gc.collect()
            rss_after = _rss_mib()
            live_after = rt.statistics().live_objects
        # Closed: the WAL is checkpointed into the database file.
        disk = sum(e.stat().st_size for e in os.scandir(data) if e.is_file())
    # The data itself: key "v" (1 byte), the value (version byte + CBOR int, <= 6 bytes).
    payload = count * (1 + 6)
    return [
        {"figure": "total time", "unit": "s", "value": elapsed},
        {"figure": "writes/s", "unit": "writes/s", "value": count / elapsed},
        {"figure": "peak RSS", "unit": "MiB", "value": peak},
        {
            "figure": "RSS after eviction",
            "unit": "MiB",
            "value": rss_after,
            "note": f"live objects {live_before} before eviction, {live_after} after",
        },
        {"figure": "live objects after eviction", "unit": "objects", "value": live_after},
        {"figure": "disk beyond data", "unit": "B/object", "value": (disk - payload) / count},
    ]


def run(quick: bool, runs: int, only: set[str]) -> list[Figure]:
    if "million-objects" not in only:
        return []
    units = {
        "total time": ("s", False),
        "writes/s": ("writes/s", True),
        "peak RSS": ("MiB", False),
        "RSS after eviction": ("MiB", False),
        "live objects after eviction": ("objects", False),
        "disk beyond data": ("B/object", False),
    }
    return repeat(
        "benchmarks.scenarios.million", "million-objects", quick=quick, runs=runs, units=units
    )


if __name__ == "__main__":
    emit(uvloop.run(_measure("--quick" in sys.argv)))
