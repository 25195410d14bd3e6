"""Deadlines on calls: a stub call that outlives its timeout fails the caller.

A call runs in its caller's task, so the only way to give the caller an answer
is to cancel that task where it waits.  Arming a timer per call
(``asyncio.timeout``) costs about 5 µs, as much as a whole call, so calls are
instead registered with one sweeper that wakes a few times per timeout and
cancels the tasks whose deadline has passed: a deadline is kept to within a
quarter of the timeout (and one second), which is all a timeout of seconds
needs.  With one timeout for all calls, registration order is deadline order,
and a sweep stops at the first call still in time.  Registering costs a list
and a dict entry (about a tenth of a microsecond).

When the sweeper cancels a call, the object's event stops where it waits; its
writes so far commit like those of any event that raised.  The caller gets
:class:`~roost.CallTimeout`: the call may have run in part or in whole.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from typing import TYPE_CHECKING, Any, Final

from ..errors import CallTimeout, RuntimeClosed

if TYPE_CHECKING:
    from .clock import Clock

__all__ = ["CallDeadlines", "Deadline"]

log = logging.getLogger("roost.runtime")

_EXPIRED: Final = "timeout"
_CLOSED: Final = "closed"

#: One call in flight: [its task, the sweep generation it started in, why it
#: was cancelled (None: it was not)].  A list, not a class: one is made per call.
Deadline = list[Any]
_TASK, _GENERATION, _WHY = 0, 1, 2


class CallDeadlines:
    """The calls in flight in one runtime, and the sweeper that expires them.

    The sweeper wakes every ``interval`` (a quarter of the timeout, at most one
    second) and advances a generation; a call is due once ``ticks`` generations
    have passed since it started, so it fails between ``timeout`` and
    ``timeout + interval`` after it began.
    """

    def __init__(self, clock: Clock, timeout: float | None) -> None:
        if timeout is not None and (isinstance(timeout, bool) or not timeout > 0):
            raise ValueError(f"call_timeout must be a positive number or None, not {timeout!r}")
        self._clock = clock
        self.timeout = timeout
        self._interval = min(1.0, timeout / 4) if timeout is not None else 0.0
        self._ticks = math.ceil(timeout / self._interval - 1e-9) if timeout is not None else 0
        self._generation = 0
        # Keyed by id(): insertion order is start order, which the sweep relies on.
        self._calls: dict[int, Deadline] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        # Passing the loop to current_task() saves most of its cost.
        self._loop = loop
        if self.timeout is not None:
            self._sweeper = loop.create_task(self._sweep_forever(), name="roost-call-deadlines")

    def enter(self) -> Deadline:
        """Register the current task's call (``leave`` it when the call ends)."""
        deadline = [asyncio.current_task(self._loop), self._generation, None]
        self._calls[id(deadline)] = deadline
        return deadline

    def leave(self, deadline: Deadline) -> None:
        self._calls.pop(id(deadline), None)

    def raise_if_expired(self, deadline: Deadline, what: str) -> None:
        """Raise the caller's error if this class cancelled the call; return if
        someone else did (the plain cancellation then goes on).

        Called while ``asyncio.CancelledError`` propagates out of the call; the
        task's cancellation is withdrawn, since its caller gets an error instead.
        """
        why = deadline[_WHY]
        if why is None:
            return
        deadline[_TASK].uncancel()
        if why == _CLOSED:
            raise RuntimeClosed(f"the runtime closed before {what} finished") from None
        raise CallTimeout(
            f"{what} did not finish within {self.timeout:g} s (call_timeout); it may "
            "have run in part or in whole"
        ) from None

    def tick(self) -> int:
        """Advance a generation and cancel the calls now due; return how many."""
        self._generation += 1
        last = self._generation - self._ticks
        due = list(itertools.takewhile(lambda d: d[_GENERATION] <= last, self._calls.values()))
        self._cancel(due, _EXPIRED)
        return len(due)

    def cancel_all(self) -> None:
        """Fail every call in flight with RuntimeClosed (at shutdown)."""
        self._cancel(list(self._calls.values()), _CLOSED)

    def _cancel(self, deadlines: list[Deadline], why: str) -> None:
        # A call made from inside an object runs in its caller's task: cancel a
        # task once, for its outermost call (registered first), so the inner
        # calls unwind with the plain cancellation and the outer one answers.
        cancelled: set[asyncio.Task[Any]] = set()
        for deadline in deadlines:
            del self._calls[id(deadline)]
            task = deadline[_TASK]
            if task is None or task.done() or task in cancelled:
                continue
            cancelled.add(task)
            deadline[_WHY] = why
            task.cancel()

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    async def _sweep_forever(self) -> None:
        while True:
            await self._clock.sleep(self._interval)
            try:
                self.tick()
            except Exception:  # pragma: no cover - a bug; keep sweeping
                log.exception("call deadline sweep failed")
