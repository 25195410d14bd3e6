"""Testing a durable object with roost.testing: no sleeping, no server.

The fixtures (``roost_runtime``, ``roost_env``, ``roost_clock``,
``roost_runtime_factory``) come from Roost's pytest plugin; ``conftest.py``
says which classes to run (``roost_objects``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

import roost
from roost.testing import (
    ManualClock,
    advance,
    fail_commits,
    list_object_ids,
    run_alarm,
    run_in_object,
)


def now_ms(clock: ManualClock) -> int:
    return int(clock.time() * 1000)


async def test_reminders_are_sent_when_due(
    roost_runtime: roost.Runtime, roost_env: roost.Env, roost_clock: ManualClock
) -> None:
    alice = roost_env.REMINDERS.get_by_name("alice")
    start = now_ms(roost_clock)
    await alice.add("stand up", start + 60_000)
    await alice.add("drink water", start + 5_000)

    await advance(roost_runtime, 5)  # virtual time: returns at once
    assert await alice.sent() == ["drink water"]
    await advance(roost_runtime, 55)
    assert await alice.sent() == ["drink water", "stand up"]
    assert await alice.pending() == []


async def test_the_alarm_tracks_the_earliest_reminder(
    roost_env: roost.Env, roost_clock: ManualClock
) -> None:
    bob = roost_env.REMINDERS.get_by_name("bob")
    start = now_ms(roost_clock)
    first = await bob.add("early", start + 1_000)
    await bob.add("late", start + 9_000)

    async def alarm_of(obj: roost.DurableObject, ctx: roost.ObjectState) -> int | None:
        return await ctx.storage.get_alarm()

    assert await run_in_object(bob, alarm_of) == start + 1_000
    await bob.cancel(first)
    assert await run_in_object(bob, alarm_of) == start + 9_000


async def test_run_alarm_fires_without_waiting(
    roost_env: roost.Env, roost_clock: ManualClock
) -> None:
    carol = roost_env.REMINDERS.get_by_name("carol")
    assert await run_alarm(carol) is False  # nothing scheduled yet
    await carol.add("far away", now_ms(roost_clock) - 1)
    assert await run_alarm(carol) is True
    assert await carol.sent() == ["far away"]


async def test_state_survives_a_restart(
    roost_runtime: roost.Runtime,
    roost_runtime_factory: Callable[..., Awaitable[roost.Runtime]],
    roost_clock: ManualClock,
) -> None:
    await roost_runtime.env.REMINDERS.get_by_name("dave").add("later", now_ms(roost_clock) + 30_000)
    await roost_runtime.close()

    restarted = await roost_runtime_factory(env={"CLOCK": roost_clock})
    dave = restarted.env.REMINDERS.get_by_name("dave")
    assert [r["text"] for r in await dave.pending()] == ["later"]
    await advance(restarted, 30)
    assert await dave.sent() == ["later"]
    assert [i.hex for i in list_object_ids(restarted.env.REMINDERS)] == [dave.id.hex]


async def test_a_failed_commit_keeps_nothing(
    roost_env: roost.Env, roost_clock: ManualClock
) -> None:
    erin = roost_env.REMINDERS.get_by_name("erin")
    await erin.add("kept", now_ms(roost_clock) + 1_000)
    with fail_commits(erin), pytest.raises(roost.CommitFailed):
        await erin.add("lost", now_ms(roost_clock) + 2_000)
    assert [r["text"] for r in await erin.pending()] == ["kept"]
