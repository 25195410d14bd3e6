"""Test setup of the reminders example: what a project using roost.testing writes."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import roost
import roost.testing

sys.path.insert(0, str(Path(__file__).parent))  # an example is not an installed package

from reminders import Reminders  # noqa: E402


@pytest.fixture
def roost_objects() -> dict[str, type[roost.DurableObject]]:
    """The bindings roost.testing's roost_runtime fixture runs."""
    return {"REMINDERS": Reminders}


@pytest.fixture
async def roost_runtime(
    roost_runtime_factory: Callable[..., Awaitable[roost.Runtime]],
    roost_clock: roost.testing.ManualClock,
) -> roost.Runtime:
    """The kit's runtime, with the virtual clock also given to objects as env.CLOCK."""
    return await roost_runtime_factory(env={"CLOCK": roost_clock})
