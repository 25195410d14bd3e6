"""The input gate: which event may start now.

Storage calls on an embedded engine never suspend, so in asyncio an object's
events can only interleave where one of them awaits something outside the
object.  That is exactly the freedom rule 2 of the consistency contract allows
(docs/consistency.md), and it needs no lock.  The gate is for the moments when
*nothing* may interleave: while a ``block_concurrency_while`` callback runs
(including one started by the constructor), and while a storage operation
really suspends (``storage.sync()``, which waits for the disk).  New events
then wait in arrival order, and are let in one per loop turn so that an event
let in can close the gate again before the next one starts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

__all__ = ["InputGate"]


class InputGate:
    __slots__ = ("_loop", "_closed", "_waiters", "_granted", "_pumping")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._closed = 0
        # Made on the first wait: most objects never wait, and an empty deque
        # is the largest part of an idle activation.
        self._waiters: deque[asyncio.Future[None]] | None = None
        self._granted = 0  # let in, but not yet running
        self._pumping = False

    @property
    def is_open(self) -> bool:
        """True when a new event may start at once."""
        return not self._closed and not self._waiters and not self._granted

    @property
    def waiting(self) -> int:
        return len(self._waiters) if self._waiters is not None else 0

    def close(self) -> None:
        self._closed += 1

    def open(self) -> None:
        self._closed -= 1
        assert self._closed >= 0, "input gate opened more often than closed"
        if not self._closed:
            self._schedule_pump()

    async def wait(self) -> None:
        """Wait for this event's turn (call only when ``is_open`` is false)."""
        future = self._loop.create_future()
        if self._waiters is None:
            self._waiters = deque()
        self._waiters.append(future)
        self._schedule_pump()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # We were let in but will not run: let the next one in instead.
                self._granted -= 1
                self._schedule_pump()
            else:
                self._remove(future)
            raise
        self._granted -= 1

    def wake_all(self) -> None:
        """Let every waiter go (the object was reset; they will look elsewhere)."""
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                self._granted += 1
                future.set_result(None)

    def _remove(self, future: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            if self._waiters is not None:
                self._waiters.remove(future)

    def _schedule_pump(self) -> None:
        if not self._pumping:
            self._pumping = True
            self._loop.call_soon(self._pump)

    def _pump(self) -> None:
        self._pumping = False
        if self._closed or self._granted:
            # A let-in event has not run yet; it decides (by running) when the
            # next may go.  `wait()` reschedules when it starts.
            if self._granted and not self._closed:
                self._schedule_pump()
            return
        while self._waiters:
            future = self._waiters.popleft()
            if future.done():
                continue
            self._granted += 1
            future.set_result(None)
            self._schedule_pump()
            return
