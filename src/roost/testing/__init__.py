"""Testing your durable objects: fixtures and helpers (``roost.testing``).

With Roost installed, pytest loads the fixtures of :mod:`roost.testing.plugin`
by itself.  Define a ``roost_objects`` fixture with your bindings, then ask for
``roost_runtime`` (an in-process runtime on fresh temporary storage, driven by
a :class:`ManualClock`), ``roost_env`` or ``roost_clock``::

    @pytest.fixture
    def roost_objects():
        return {"COUNTER": Counter}

    async def test_alarm_fires(roost_env, roost_runtime):
        stub = roost_env.COUNTER.get_by_name("a")
        await stub.schedule_in(seconds=60)
        await advance(roost_runtime, 60)          # no sleeping: time is virtual
        assert await run_in_object(stub, lambda obj, ctx: obj.fired)

See ``docs/testing.md`` and ``examples/reminders/test_reminders.py``.
"""

from ..runtime.clock import ManualClock
from .helpers import (
    InjectedCommitFailure,
    advance,
    fail_commits,
    list_object_ids,
    run_alarm,
    run_in_object,
)

__all__ = [
    "InjectedCommitFailure",
    "ManualClock",
    "advance",
    "fail_commits",
    "list_object_ids",
    "run_alarm",
    "run_in_object",
]
