"""The runtime raises the collector's young-generation threshold while it runs."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

import roost


class Noop(roost.DurableObject):
    async def ping(self) -> int:
        return 1


@pytest.fixture(autouse=True)
def python_defaults() -> Iterator[None]:
    saved = gc.get_threshold()
    gc.set_threshold(700, *saved[1:])
    yield
    gc.set_threshold(*saved)


async def test_raised_while_running_and_restored_on_close() -> None:
    runtime = roost.Runtime({"N": Noop})
    assert gc.get_threshold()[0] == 700  # construction changes nothing
    async with runtime:
        assert await runtime.env.N.get_by_name("a").ping() == 1
        assert gc.get_threshold()[0] == 50_000
    assert gc.get_threshold()[0] == 700


async def test_a_setting_someone_chose_is_kept() -> None:
    gc.set_threshold(1234)
    async with roost.Runtime({"N": Noop}, gc_threshold=9_999) as runtime:
        await runtime.env.N.get_by_name("a").ping()
        assert gc.get_threshold()[0] == 1234
    assert gc.get_threshold()[0] == 1234


async def test_none_leaves_the_collector_alone() -> None:
    async with roost.Runtime({"N": Noop}, gc_threshold=None) as runtime:
        await runtime.env.N.get_by_name("a").ping()
        assert gc.get_threshold()[0] == 700


@pytest.mark.parametrize("bad", [0, -5, True])
def test_bad_threshold_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="gc_threshold"):
        roost.Runtime({"N": Noop}, gc_threshold=bad)
