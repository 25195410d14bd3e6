"""Call deadlines: a call that never finishes fails its caller, and close() fails the rest."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

import roost
from roost.runtime.deadlines import CallDeadlines
from roost.testing import ManualClock, advance
from tests.conftest import quiesce

#: Set by a test; an event waits on it forever unless the test sets it.
release: asyncio.Event | None = None


class Stuck(roost.DurableObject):
    async def hang(self) -> None:
        await self.ctx.storage.put("started", True)
        assert release is not None
        await release.wait()
        await self.ctx.storage.put("finished", True)

    async def hang_through(self, name: str) -> None:
        await self.env.STUCK.get_by_name(name).hang()

    async def read(self) -> dict[str, Any]:
        return await self.ctx.storage.list()

    async def fetch(self, request: roost.Request) -> roost.Response:
        await self.hang()
        return roost.Response("done")


@pytest.fixture(autouse=True)
def _release() -> None:
    global release
    release = asyncio.Event()


def _runtime(clock: ManualClock, **options: Any) -> roost.Runtime:
    return roost.Runtime({"STUCK": Stuck}, clock=clock, **options)


async def test_a_call_past_its_timeout_fails_with_call_timeout_and_the_object_serves_on() -> None:
    clock = ManualClock()
    async with _runtime(clock, call_timeout=5) as rt:
        stub = rt.env.STUCK.get_by_name("a")
        call = asyncio.ensure_future(stub.hang())
        await quiesce()
        await advance(rt, 4)
        assert not call.done()  # in time
        await advance(rt, 2.5)
        with pytest.raises(roost.CallTimeout, match=r"STUCK.hang\(\) did not finish within 5 s"):
            await call
        assert isinstance(call.exception(), TimeoutError)
        # The event stopped where it waited; what it wrote before is kept.
        assert await stub.read() == {"started": True}


async def test_a_fetch_times_out_too() -> None:
    clock = ManualClock()
    async with _runtime(clock, call_timeout=1) as rt:
        call = asyncio.ensure_future(rt.env.STUCK.get_by_name("f").fetch("http://x/"))
        await quiesce()
        await advance(rt, 2)
        with pytest.raises(roost.CallTimeout, match="fetch"):
            await call


async def test_a_nested_call_answers_the_outer_caller_once() -> None:
    clock = ManualClock()
    async with _runtime(clock, call_timeout=5) as rt:
        outer = rt.env.STUCK.get_by_name("outer")
        call = asyncio.ensure_future(outer.hang_through("inner"))
        await quiesce()
        await advance(rt, 6)
        with pytest.raises(roost.CallTimeout, match=r"STUCK.hang_through\(\)"):
            await call
        assert await rt.env.STUCK.get_by_name("inner").read() == {"started": True}


async def test_calls_that_finish_in_time_are_untouched_and_leave_nothing_behind() -> None:
    clock = ManualClock()
    async with _runtime(clock, call_timeout=5) as rt:
        stub = rt.env.STUCK.get_by_name("a")
        for _ in range(3):
            assert await stub.read() == {}
        assert rt.deadlines._calls == {}
        await advance(rt, 60)
        assert await stub.read() == {}


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    clock = ManualClock()
    async with _runtime(clock, call_timeout=5) as rt:
        call = asyncio.ensure_future(rt.env.STUCK.get_by_name("a").hang())
        await quiesce()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call


async def test_close_fails_callers_left_waiting_with_runtime_closed() -> None:
    clock = ManualClock()
    rt = _runtime(clock, call_timeout=None)
    await rt.start()
    stub = rt.env.STUCK.get_by_name("a")
    calls = [asyncio.ensure_future(stub.hang()) for _ in range(3)]
    await quiesce()
    await advance(rt, 3600)  # no timeout: still waiting
    assert not any(c.done() for c in calls)
    await rt.close(grace=0)
    for call in calls:
        with pytest.raises(roost.RuntimeClosed, match="closed before STUCK.hang"):
            await call


def test_call_timeout_is_checked() -> None:
    for bad in (0, -1, True, float("nan")):
        with pytest.raises(ValueError, match="call_timeout"):
            CallDeadlines(ManualClock(), bad)


class Spinner(roost.DurableObject):
    async def spin_without_awaiting(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:  # CPU-bound code that never awaits
            pass


async def test_the_watchdog_logs_an_event_that_holds_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with roost.Runtime({"SPIN": Spinner}, loop_block_warning=0.1) as rt:
        with caplog.at_level(logging.WARNING, logger="roost.runtime"):
            await rt.env.SPIN.get_by_name("s").spin_without_awaiting(1.0)
    warnings = [r for r in caplog.records if "event loop has been blocked" in r.getMessage()]
    assert len(warnings) == 1  # once per stall, not once per check
    assert "in spin_without_awaiting" in warnings[0].getMessage()


async def test_no_watchdog_warning_when_the_loop_is_free(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with roost.Runtime({"SPIN": Spinner}, loop_block_warning=0.1) as rt:
        with caplog.at_level(logging.WARNING, logger="roost.runtime"):
            # Short events on a free loop, until the watchdog has seen the loop's
            # heartbeat (every quarter threshold) 12 times: three thresholds.
            beats: set[float] = set()
            deadline = time.monotonic() + 10
            while len(beats) < 12 and time.monotonic() < deadline:
                await rt.env.SPIN.get_by_name("s").spin_without_awaiting(0)
                beats.add(rt.watchdog._beat)
                await asyncio.sleep(0.005)
            assert len(beats) >= 12, "the watchdog's heartbeat stopped"
    assert not [r for r in caplog.records if "blocked" in r.getMessage()]
    with pytest.raises(ValueError, match="loop_block_warning"):
        roost.Runtime({"SPIN": Spinner}, loop_block_warning=0)
