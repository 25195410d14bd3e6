"""Alarms: on time, at once when past, retried with backoff, across restarts and eviction."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import roost
from roost.runtime.alarms import MAX_RETRIES, AlarmScheduler, retry_delay
from roost.testing import ManualClock, advance, run_alarm, run_in_object

Factory = Callable[..., Awaitable[roost.Runtime]]

#: (object ID hex, retry_count, is_retry, get_alarm() inside the handler, clock ms)
fired: list[tuple[str, int, bool, int | None, int]] = []
constructed: list[str] = []


class Timer(roost.DurableObject):
    failures_wanted = 0
    #: When set, alarm() sets the next alarm this many ms later.
    rearm_ms: int | None = None

    def __init__(self, ctx: roost.ObjectState, env: roost.Env) -> None:
        super().__init__(ctx, env)
        constructed.append(ctx.id.hex)

    async def arm(self, when: Any) -> int | None:
        await self.ctx.storage.set_alarm(when)
        return await self.ctx.storage.get_alarm()

    async def disarm(self) -> None:
        await self.ctx.storage.delete_alarm()

    async def current(self) -> int | None:
        return await self.ctx.storage.get_alarm()

    async def alarm(self, info: roost.AlarmInfo) -> None:
        clock = self.env["CLOCK"]
        fired.append(
            (
                self.ctx.id.hex,
                info.retry_count,
                info.is_retry,
                await self.ctx.storage.get_alarm(),
                int(clock.time() * 1000),
            )
        )
        if info.retry_count < Timer.failures_wanted:
            raise RuntimeError("alarm handler failed")
        if Timer.rearm_ms is not None:
            await self.ctx.storage.set_alarm(int(clock.time() * 1000) + Timer.rearm_ms)


class SqlTimer(Timer, sql=True):
    pass


class Periodic(roost.DurableObject):
    """Uses the runtime's clock through ``ctx.now()``, as the docs advise."""

    async def start(self) -> None:
        await self.ctx.storage.set_alarm(self.ctx.now() + timedelta(seconds=1))

    async def now(self) -> datetime:
        return self.ctx.now()

    async def alarm(self) -> None:
        count = (await self.ctx.storage.get("count") or 0) + 1
        await self.ctx.storage.put("count", count)
        if count < 3:
            await self.ctx.storage.set_alarm(self.ctx.now() + timedelta(seconds=1))


@pytest.fixture(autouse=True)
def _reset() -> None:
    fired.clear()
    Timer.failures_wanted = 0
    Timer.rearm_ms = None


@pytest.fixture(params=["kv-memory", "kv-sqlite", "sql-memory", "sql-sqlite"])
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def roost_data_dir(variant: str, tmp_path: Path) -> Path | None:
    return tmp_path / "data" if variant.endswith("sqlite") else None


@pytest.fixture
def roost_objects(variant: str) -> dict[str, type[roost.DurableObject]]:
    return {"TIMER": SqlTimer if variant.startswith("sql") else Timer, "PERIODIC": Periodic}


@pytest.fixture
async def runtime(roost_runtime_factory: Factory, roost_clock: ManualClock) -> roost.Runtime:
    return await roost_runtime_factory(env={"CLOCK": roost_clock})


def now_ms(clock: ManualClock) -> int:
    return int(clock.time() * 1000)


async def test_ctx_now_is_the_runtime_clock(
    runtime: roost.Runtime, roost_clock: ManualClock
) -> None:
    stub = runtime.env.PERIODIC.get_by_name("p")
    start = await stub.now()
    assert start.tzinfo is UTC and start.timestamp() == roost_clock.time()
    assert abs(start.timestamp() - time.time()) > 3600  # not the machine's clock
    await advance(runtime, 90)
    assert await stub.now() - start == timedelta(seconds=90)


async def test_fires_on_time(runtime: roost.Runtime, roost_clock: ManualClock) -> None:
    stub = runtime.env.TIMER.get_by_name("a")
    due = now_ms(roost_clock) + 10_000
    assert await stub.arm(due) == due
    await advance(runtime, 9.9)
    assert fired == []
    await advance(runtime, 0.1)
    assert fired == [(stub.id.hex, 0, False, None, due)]
    assert await stub.current() is None  # spent
    await advance(runtime, 60)
    assert len(fired) == 1


async def test_past_time_fires_at_once(runtime: roost.Runtime, roost_clock: ManualClock) -> None:
    stub = runtime.env.TIMER.get_by_name("a")
    when = datetime.fromtimestamp(roost_clock.time(), UTC) - timedelta(hours=1)
    await stub.arm(when)
    await advance(runtime, 0)
    assert [f[0] for f in fired] == [stub.id.hex]


async def test_set_alarm_checks_its_argument(runtime: roost.Runtime) -> None:
    stub = runtime.env.TIMER.get_by_name("a")
    with pytest.raises(ValueError, match="aware datetime"):
        await stub.arm(datetime(2030, 1, 1))
    with pytest.raises(TypeError, match="datetime or epoch milliseconds"):
        await stub.arm("tomorrow")


async def test_delete_alarm_cancels(runtime: roost.Runtime, roost_clock: ManualClock) -> None:
    stub = runtime.env.TIMER.get_by_name("a")
    await stub.arm(now_ms(roost_clock) + 1000)
    await stub.disarm()
    assert await stub.current() is None
    await advance(runtime, 5)
    assert fired == []


async def test_set_alarm_replaces_the_previous_one(
    runtime: roost.Runtime, roost_clock: ManualClock
) -> None:
    stub = runtime.env.TIMER.get_by_name("a")
    start = now_ms(roost_clock)
    await stub.arm(start + 1000)
    await stub.arm(start + 5000)
    await advance(runtime, 2)
    assert fired == []
    await advance(runtime, 3)
    assert [f[4] for f in fired] == [start + 5000]


async def test_retries_with_backoff_and_retry_count(
    runtime: roost.Runtime, roost_clock: ManualClock
) -> None:
    Timer.failures_wanted = 3
    stub = runtime.env.TIMER.get_by_name("a")
    start = now_ms(roost_clock)
    await stub.arm(start)
    await advance(runtime, 0)
    for _ in range(40):
        await advance(runtime, 0.5)
    assert [(f[1], f[2]) for f in fired] == [(0, False), (1, True), (2, True), (3, True)]
    times = [f[4] - start for f in fired]
    assert times == [0, 2000, 2000 + 4000, 2000 + 4000 + 8000]
    assert await stub.current() is None
    stats = runtime.alarms.statistics()
    assert (stats.delivered, stats.failed) == (1, 3)


async def test_gives_up_after_six_retries(runtime: roost.Runtime, roost_clock: ManualClock) -> None:
    Timer.failures_wanted = 100
    stub = runtime.env.TIMER.get_by_name("a")
    await stub.arm(now_ms(roost_clock))
    total = sum(retry_delay(n) for n in range(1, MAX_RETRIES + 1))
    for _ in range(int(total) + 10):
        await advance(runtime, 1)
    assert [f[1] for f in fired] == list(range(MAX_RETRIES + 1))
    assert await stub.current() is None
    assert runtime.alarms.statistics().given_up == 1


async def test_alarm_wakes_an_evicted_object(
    roost_runtime_factory: Factory, roost_clock: ManualClock
) -> None:
    runtime = await roost_runtime_factory(env={"CLOCK": roost_clock}, idle_timeout=5)
    stub = runtime.env.TIMER.get_by_name("a")
    await stub.arm(now_ms(roost_clock) + 60_000)
    before = len(constructed)
    await advance(runtime, 30)
    assert not runtime.is_live("TIMER", stub.id)
    await advance(runtime, 30)
    assert [f[0] for f in fired] == [stub.id.hex]
    assert len(constructed) == before + 1


async def test_handler_may_set_the_next_alarm(
    runtime: roost.Runtime, roost_clock: ManualClock
) -> None:
    stub = runtime.env.PERIODIC.get_by_name("p")
    await stub.start()
    for _ in range(10):
        await advance(runtime, 1)
    assert await run_in_object(stub, lambda obj, ctx: ctx.storage.get("count")) == 3
    assert await run_in_object(stub, lambda obj, ctx: ctx.storage.get_alarm()) is None


async def test_run_alarm_fires_now(runtime: roost.Runtime, roost_clock: ManualClock) -> None:
    stub = runtime.env.TIMER.get_by_name("a")
    assert await run_alarm(stub) is False
    await stub.arm(now_ms(roost_clock) + 3_600_000)
    assert await run_alarm(stub) is True
    assert [f[0] for f in fired] == [stub.id.hex]
    assert await stub.current() is None
    Timer.failures_wanted = 1
    await stub.arm(now_ms(roost_clock) + 3_600_000)
    with pytest.raises(RuntimeError, match="handler failed"):
        await run_alarm(stub)
    assert await stub.current() is not None  # kept for its retry


@pytest.mark.parametrize("variant", ["kv-sqlite", "sql-sqlite"])
async def test_alarm_due_while_stopped_fires_after_restart(
    roost_runtime_factory: Factory, roost_data_dir: Path, variant: str
) -> None:
    clock = ManualClock()
    first = await roost_runtime_factory(env={"CLOCK": clock}, clock=clock)
    due = now_ms(clock) + 10_000
    await first.env.TIMER.get_by_name("a").arm(due)
    await first.close()
    assert fired == []
    later = ManualClock(start_time=clock.time() + 3600)  # the server was down an hour
    second = await roost_runtime_factory(env={"CLOCK": later}, clock=later)
    await advance(second, 0)
    stub = second.env.TIMER.get_by_name("a")
    assert [(f[0], f[3]) for f in fired] == [(stub.id.hex, None)]
    assert await second.env.TIMER.get_by_name("a").current() is None


class Relay(roost.DurableObject):
    """Its alarm arms another object's alarm (through a stub, as an app would)."""

    async def arm(self, when: int, then: str | None = None, then_when: int = 0) -> None:
        await self.ctx.storage.put("then", [then, then_when])
        await self.ctx.storage.set_alarm(when)

    async def alarm(self) -> None:
        fired.append((self.ctx.id.hex, 0, False, None, 0))
        then, then_when = await self.ctx.storage.get("then")
        if then is not None:
            await self.env.RELAY.get(self.env.RELAY.id_from_string(then)).arm(then_when)


async def test_many_alarms_due_together_each_fire_once(
    runtime: roost.Runtime, roost_clock: ManualClock
) -> None:
    # More than one page of the index (256 rows) and more than the deliveries
    # allowed in flight: every alarm fires, exactly once.
    ns = runtime.env.TIMER
    stubs = [ns.get_by_name(f"t{i}") for i in range(600)]
    due = now_ms(roost_clock) + 1000
    for start in range(0, len(stubs), 100):
        await asyncio.gather(*(s.arm(due) for s in stubs[start : start + 100]))
    await advance(runtime, 1)
    assert sorted(f[0] for f in fired) == sorted(s.id.hex for s in stubs)
    assert runtime.alarms.statistics().delivered == len(stubs)


@pytest.mark.parametrize("variant", ["kv-memory", "kv-sqlite"])
async def test_an_alarm_set_behind_a_pass_still_fires(
    roost_data_dir: Path, roost_clock: ManualClock, variant: str
) -> None:
    # Small pages and few deliveries at once make the scheduler read the due
    # rows in several pages; the first alarm sets one that sorts before all of
    # them (earlier due time), behind where the pass already is.
    runtime = roost.Runtime(
        {"RELAY": Relay, "TIMER": Timer}, data_dir=roost_data_dir, clock=roost_clock
    )
    runtime.host.alarms = AlarmScheduler(runtime.host, concurrency=1, batch=1)
    async with runtime:
        ns = runtime.env.RELAY
        start = now_ms(roost_clock)
        late = ns.get_by_name("late")
        stubs = [ns.get_by_name(f"r{i}") for i in range(6)]
        first, *others = stubs
        await first.arm(start + 1000, late.id.hex, start - 5000)
        for stub in others:
            await stub.arm(start + 1001)
        await advance(runtime, 2)
    assert sorted(f[0] for f in fired) == sorted(s.id.hex for s in [*stubs, late])


async def test_an_object_woken_for_its_alarm_is_evicted_after_the_idle_timeout(
    runtime: roost.Runtime, roost_clock: ManualClock
) -> None:
    stub = runtime.env.TIMER.get_by_name("sleeper")
    await stub.arm(now_ms(roost_clock) + 60_000)
    await advance(runtime, 59)
    assert not runtime.is_live("TIMER", stub.id)  # idle: evicted before its alarm
    await advance(runtime, 2)
    assert [f[0] for f in fired] == [stub.id.hex]
    assert runtime.is_live("TIMER", stub.id)  # woken, and kept like any object...
    await advance(runtime, runtime.idle_timeout + 1)
    assert not runtime.is_live("TIMER", stub.id)  # ...until idle for the timeout (rule 7)
