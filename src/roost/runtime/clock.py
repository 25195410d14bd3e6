"""Clocks: the runtime's only source of time.

Eviction and alarms read time through a :class:`Clock`, so tests can
swap in :class:`ManualClock` and move time forward instantly instead of sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from abc import ABC, abstractmethod

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(ABC):
    """Where the runtime reads time and waits for it."""

    @abstractmethod
    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for timeouts)."""

    @abstractmethod
    def time(self) -> float:
        """Seconds since the Unix epoch (for alarms, which are wall-clock times)."""

    @abstractmethod
    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""


class SystemClock(Clock):
    """Real time."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ManualClock(Clock):
    """A clock that moves only when told to, for tests that must never sleep.

    ``await clock.advance(seconds)`` moves both readings forward, wakes every
    sleeper whose time has come (in deadline order) and lets the woken tasks run.
    """

    def __init__(self, *, start_time: float = 1_767_225_600.0) -> None:
        self._monotonic = 0.0
        self._offset = start_time
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()

    def monotonic(self) -> float:
        return self._monotonic

    def time(self) -> float:
        return self._offset + self._monotonic

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._monotonic + seconds, next(self._counter), future))
        try:
            await future
        finally:
            if not future.done():
                future.cancel()

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and run everything that became due."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        # First let tasks that are ready run up to their next wait, so that a
        # sleep they are about to start counts from the time before the move.
        await _settle()
        target = self._monotonic + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            self._monotonic = max(self._monotonic, deadline)
            if not future.done():
                future.set_result(None)
                await _settle()
        self._monotonic = target
        await _settle()


async def _settle() -> None:
    # A few loop turns let woken tasks run up to their next real wait.
    for _ in range(8):
        await asyncio.sleep(0)
