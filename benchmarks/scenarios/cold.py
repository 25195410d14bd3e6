"""cold-activation: latency of the first call to an evicted object, by state size."""

from __future__ import annotations

import sys
import tempfile
import time

import uvloop

import roost
from roost.runtime import ManualClock

from ..harness import Figure, emit
from .inprocess import percentile, repeat

CHUNK = 128 * 1024 - 64  # under the default value limit once encoded: 1 MiB is 9 values


class Holder(roost.DurableObject):
    async def fill(self, total: int) -> None:
        chunks = {
            f"chunk{i}": bytes(min(CHUNK, total - i * CHUNK)) for i in range(-(-total // CHUNK))
        }
        await self.ctx.storage.put(chunks)

    async def size(self) -> int:
        return sum(len(v) for v in (await self.ctx.storage.list()).values())


async def _measure(quick: bool) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    clock = ManualClock()
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as data:
        async with roost.Runtime({"H": Holder}, data_dir=data, clock=clock) as rt:
            for label, size, count in (
                ("1 KiB", 1024, 300 if quick else 3000),
                ("1 MiB", 1 << 20, 20 if quick else 200),
            ):
                stubs = [rt.env.H.get_by_name(f"{label}-{i}") for i in range(count)]
                for stub in stubs:
                    await stub.fill(size)
                await clock.advance(rt.idle_timeout + 5)
                assert rt.statistics().live_objects == 0
                latencies = []
                for stub in stubs:
                    start = time.perf_counter()
                    assert await stub.size() == size
                    latencies.append((time.perf_counter() - start) * 1000)
                    await clock.advance(0)
                for pct in (50, 99):
                    out.append(
                        {
                            "figure": f"{label} p{pct}",
                            "unit": "ms",
                            "value": percentile(latencies, pct),
                        }
                    )
    return out


def run(quick: bool, runs: int, only: set[str]) -> list[Figure]:
    if "cold-activation" not in only:
        return []
    units = {f"{s} p{p}": ("ms", False) for s in ("1 KiB", "1 MiB") for p in (50, 99)}
    return repeat(
        "benchmarks.scenarios.cold", "cold-activation", quick=quick, runs=runs, units=units
    )


if __name__ == "__main__":
    emit(uvloop.run(_measure("--quick" in sys.argv)))
