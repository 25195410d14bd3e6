"""alarms: many objects whose alarms are all due at the same moment, each woken from eviction.

A first runtime arms every object (due one hour ahead) and closes; a second one
starts on a clock one hour later, so every alarm is due at once and no object
is live: each delivery activates its object.  ``alarm()`` reads a key and
writes one, like a typical handler.  The clock runs from the second runtime's
start until every alarm has fired and its deletion is durable (the index is
empty); default durability (fsync before outputs).
"""

from __future__ import annotations

import asyncio
import collections
import sys
import tempfile
import time
from pathlib import Path

import uvloop

import roost
from roost.runtime import SystemClock

from ..harness import Figure, emit
from .inprocess import repeat

AHEAD = 3600.0
#: Alarms fired per object ID hex (duplicates show as counts above 1).
fired: collections.Counter[str] = collections.Counter()
#: Set when every object has fired (``_expected`` of them).
_all_fired = asyncio.Event()
_expected = 0


class _Later(SystemClock):
    """Real time, shifted: the second runtime starts after every alarm is due."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def time(self) -> float:
        return time.time() + self.offset


class Tick(roost.DurableObject):
    async def arm(self, due: int) -> None:
        await self.ctx.storage.put("due", due)
        await self.ctx.storage.set_alarm(due)

    async def alarm(self) -> None:
        due = await self.ctx.storage.get("due")
        await self.ctx.storage.put("fired", due)
        fired[self.ctx.id.hex] += 1
        if len(fired) == _expected:
            _all_fired.set()


class SqlTick(Tick, sql=True):
    pass


async def _arm(data: Path, cls: type[roost.DurableObject], count: int) -> int:
    due = int((time.time() + AHEAD) * 1000)
    async with roost.Runtime({"T": cls}, data_dir=data) as rt:
        ns = rt.env.T
        next_index = iter(range(count))

        async def caller() -> None:
            for i in next_index:
                await ns.get_by_name(f"t-{i}").arm(due)

        await asyncio.gather(*(caller() for _ in range(64)))
    return due


async def _fire(data: Path, cls: type[roost.DurableObject], count: int) -> dict[str, float]:
    global _expected
    fired.clear()
    _all_fired.clear()
    _expected = count
    rt = roost.Runtime({"T": cls}, data_dir=data, clock=_Later(AHEAD + 1))
    cpu, start = time.process_time(), time.perf_counter()
    async with rt:
        await asyncio.wait_for(_all_fired.wait(), 600)
        # Then every deletion is durable and the index empty.
        await rt.alarms.settle(limit=120)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
        left = rt.engine.due_alarms(2**62, 1)
        stats = rt.alarms.statistics()
    assert not left, f"alarm rows left after firing: {left}"
    assert stats.failed == 0, stats
    return {
        "rate": count / elapsed,
        "time": elapsed,
        "cpu": cpu / count * 1e6,
        "duplicates": sum(fired.values()) - len(fired),
    }


async def _measure(quick: bool) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for label, cls, count in (
        ("KV", Tick, 5_000 if quick else 100_000),
        ("SQL", SqlTick, 1_000 if quick else 10_000),
    ):
        with tempfile.TemporaryDirectory(prefix="bench-alarms-") as data:
            await _arm(Path(data), cls, count)
            got = await _fire(Path(data), cls, count)
        note = f"{count:,} objects, all due at once, none live"
        out += [
            {"figure": f"{label}: firing rate", "unit": "alarms/s", "value": got["rate"]},
            {"figure": f"{label}: total time", "unit": "s", "value": got["time"], "note": note},
            {"figure": f"{label}: CPU per alarm", "unit": "µs", "value": got["cpu"]},
            {"figure": f"{label}: duplicates", "unit": "alarms", "value": got["duplicates"]},
        ]
    return out


def run(quick: bool, runs: int, only: set[str]) -> list[Figure]:
    if "alarms" not in only:
        return []
    units = {}
    for label in ("KV", "SQL"):
        units[f"{label}: total time"] = ("s", False)
        units[f"{label}: CPU per alarm"] = ("µs", False)
        units[f"{label}: duplicates"] = ("alarms", False)
    return repeat("benchmarks.scenarios.alarms", "alarms", quick=quick, runs=runs, units=units)


if __name__ == "__main__":
    emit(uvloop.run(_measure("--quick" in sys.argv)))
