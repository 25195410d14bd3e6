"""The alarm scheduler: one task that delivers every object's ``alarm()``.

It keeps no timer per object.  The storage engine's alarm index is ordered by
due time; the scheduler reads the rows that are due a page at a time and
delivers them, and otherwise sleeps (on the runtime's :class:`Clock`) until the
next due time or until a commit sets an earlier alarm.  Memory stays bounded
by the deliveries in flight (``concurrency``) and one page of rows read ahead
(``batch``), however many alarms are pending.

A *pass* reads the due rows in index order, each page after the last row of the
one before (keyset paging), so rows whose delivery is still in flight (they
leave the index only when the object's batch commits) are not read again and
again.  When a pass has read every due row, the next one starts from the
beginning if anything happened meanwhile (a delivery ended, a commit set an
alarm): that picks up rows set behind the pass, retries and the rows that were
in flight.

A delivery is an event like any other, through :meth:`ObjectHost.dispatch`: it
wakes an evicted object and obeys the input and output gates.  Inside the event
the object's own view of its alarm decides: no alarm, or one not yet due,
means nothing runs (so a stale row is harmless).  Delivery is *at least once*:

* ``alarm()`` returned: the alarm is spent (deleted in the handler's own batch)
  unless the handler set a new one;
* ``alarm()`` raised (or its writes could not be committed): the alarm stays and
  is retried after 2 s, 4 s, 8 s ... (``retry_count`` goes up); after
  :data:`MAX_RETRIES` failed retries it is deleted;
* the server stopped: rows stay in the index, so after a restart every alarm
  that came due meanwhile fires at once.

For SQL objects the index row is only a lower bound of the alarm kept in the
object's own database; when the scheduler finds such a row early (or stale) it
corrects it from the object's own view (see ``docs/alarms.md``).  The engine
reads an evicted SQL object's alarm off the event loop and keeps its database
open for the activation that follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ..errors import RoostError, RuntimeClosed
from ..ids import ObjectId
from ..object import DurableObject
from ..storage.engine import AlarmEntry
from ..storage.kv import Storage
from .activation import ObjectRaised

if TYPE_CHECKING:
    from .host import ObjectHost

__all__ = ["MAX_RETRIES", "AlarmInfo", "AlarmScheduler", "AlarmStatistics", "retry_delay"]

log = logging.getLogger("roost.alarms")

#: Retries after the first failed delivery, as Cloudflare documents.
MAX_RETRIES: Final = 6
#: Seconds before the first retry; each later retry waits twice as long.
FIRST_RETRY_DELAY: Final = 2.0
#: Deliveries in flight at most: enough for one group commit to carry hundreds
#: of them (the fsync is shared), few enough to bound memory.
DEFAULT_CONCURRENCY: Final = 256
#: Rows whose namespace has no class any more are looked at again this much later.
_UNKNOWN_NAMESPACE_DELAY_MS: Final = 3_600_000


def retry_delay(retry_count: int) -> float:
    """Seconds to wait before retry number ``retry_count`` (1, 2, ...)."""
    return float(FIRST_RETRY_DELAY * 2 ** (retry_count - 1))


@dataclass(frozen=True, slots=True)
class AlarmInfo:
    """What ``alarm(alarm_info)`` is told about the delivery that runs it."""

    #: How many deliveries of this alarm failed before this one.
    retry_count: int

    @property
    def is_retry(self) -> bool:
        """True when an earlier delivery of this alarm failed."""
        return self.retry_count > 0


@dataclass(frozen=True, slots=True)
class AlarmStatistics:
    """Counters of the scheduler, for metrics and tests."""

    delivered: int
    failed: int
    given_up: int
    in_flight: int


class AlarmScheduler:
    """Delivers alarms for one runtime (see the module docstring)."""

    def __init__(
        self, host: ObjectHost, *, concurrency: int = DEFAULT_CONCURRENCY, batch: int = 256
    ) -> None:
        self._host = host
        self._concurrency = concurrency
        self._batch = batch
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._sleeping_until: float = float("inf")
        # Set when something may have put a due row behind the current pass.
        self._dirty = False
        self._in_flight: dict[tuple[str, str], asyncio.Task[Any]] = {}
        self._delivered = 0
        self._failed = 0
        self._given_up = 0

    # -- lifecycle ---------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the scheduling task (the runtime calls this when it starts)."""
        if self._task is not None:
            return
        self._wake = asyncio.Event()
        self._host.engine.alarm_listener = self.notify
        self._task = loop.create_task(self._run(), name="roost-alarms")

    async def close(self) -> None:
        """Stop scheduling; wait (bounded) for deliveries in flight."""
        task, self._task = self._task, None
        self._host.engine.alarm_listener = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        pending = list(self._in_flight.values())
        if pending:
            _, late = await asyncio.wait(pending, timeout=10.0)
            for straggler in late:
                straggler.cancel()

    def notify(self, due_ms: int) -> None:
        """A commit set an alarm due at ``due_ms``: wake up if that is earlier."""
        self._dirty = True
        if due_ms < self._sleeping_until and self._wake is not None:
            self._wake.set()

    async def settle(self, *, limit: float = 10.0) -> None:
        """Wait until no alarm is due now and no delivery is in flight.

        For tests: after moving a :class:`~roost.runtime.ManualClock`, this waits
        (in real time, briefly) for the deliveries that became due, including
        their commits in the engine's threads.  Raises ``TimeoutError`` after
        ``limit`` seconds of real time.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while True:
            for _ in range(4):
                await asyncio.sleep(0)
            idle = not self._in_flight and not self._host.engine.due_alarms(self._now_ms(), 1)
            if idle:
                return
            if loop.time() > deadline:
                raise TimeoutError(f"alarms did not settle within {limit} s")
            await asyncio.sleep(0.001)

    def statistics(self) -> AlarmStatistics:
        """Counters since the runtime started."""
        return AlarmStatistics(
            delivered=self._delivered,
            failed=self._failed,
            given_up=self._given_up,
            in_flight=len(self._in_flight),
        )

    def _now_ms(self) -> int:
        return int(self._host.clock.time() * 1000)

    # -- the scheduling loop ---------------------------------------------------------

    async def _run(self) -> None:
        engine = self._host.engine
        wake = self._wake
        assert wake is not None
        ready: deque[AlarmEntry] = deque()  # rows read, not started yet
        cursor: AlarmEntry | None = None  # the last row this pass has read
        more = True  # the index may hold due rows past the cursor
        while True:
            wake.clear()
            free = self._concurrency - len(self._in_flight)
            while free > 0:
                if not ready:
                    if not more:
                        break
                    page = engine.due_alarms(self._now_ms(), self._batch, after=cursor)
                    more = len(page) == self._batch
                    if not page:
                        break
                    cursor = page[-1]
                    ready.extend(page)
                entry = ready.popleft()
                if (entry.namespace, entry.object_id) not in self._in_flight:
                    self._launch(entry)
                    free -= 1
            if free <= 0:
                await wake.wait()  # a delivery finished (or a commit set an alarm)
                continue
            # This pass has read every row due now: the next starts from the top,
            # at once if something may have put a due row behind this one.
            cursor, more = None, True
            if self._dirty:
                self._dirty = False
                continue
            now = self._now_ms()
            next_due = engine.next_alarm_after(now)
            self._sleeping_until = float("inf") if next_due is None else next_due
            await self._sleep(wake, next_due)
            self._sleeping_until = float("inf")

    async def _sleep(self, wake: asyncio.Event, until_ms: int | None) -> None:
        async def timer(until: int) -> None:
            # The delay is measured when the timer starts, not when it was asked for.
            await self._host.clock.sleep((until - self._now_ms()) / 1000)

        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(wake.wait())]
        if until_ms is not None:
            waits.append(asyncio.ensure_future(timer(until_ms)))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    def _launch(self, entry: AlarmEntry) -> None:
        key = (entry.namespace, entry.object_id)
        self._in_flight[key] = self._host.loop.create_task(self._deliver_logged(entry, key))

    async def _deliver_logged(self, entry: AlarmEntry, key: tuple[str, str]) -> None:
        try:
            await self.deliver(entry)
        except Exception:
            log.exception("alarm of %s %s: delivery failed", entry.namespace, entry.object_id)
        finally:
            self._in_flight.pop(key, None)
            # Its row may still be due (say, the handler set an alarm in the past).
            self._dirty = True
            if self._wake is not None:
                self._wake.set()

    # -- one delivery ---------------------------------------------------------------------

    async def run_now(self, namespace: str, object_id: ObjectId) -> bool:
        """Deliver the object's alarm now, whatever its time; True if ``alarm()`` ran.

        An exception from ``alarm()`` is re-raised here (after it was counted as
        a failed delivery and a retry scheduled).
        """
        entry = self._host.engine.alarm_entry(namespace, object_id.hex)
        if entry is None:
            return False
        return await self.deliver(entry, force=True)

    async def deliver(self, entry: AlarmEntry, *, force: bool = False) -> bool:
        """Deliver one index row; return whether ``alarm()`` ran and returned."""
        host = self._host
        engine = host.engine
        if entry.namespace not in host.classes:
            log.warning("alarm for unknown namespace %r: postponed", entry.namespace)
            await engine.update_alarm(
                entry,
                due_ms=self._now_ms() + _UNKNOWN_NAMESPACE_DELAY_MS,
                retry_count=entry.retry_count,
            )
            return False
        # The index only holds IDs of objects that set an alarm (checked when
        # their stubs were made): the row's ID is taken as it is, without its
        # keyed hash being checked again (that showed in profiles of bursts).
        object_id = ObjectId(entry.object_id, entry.namespace)
        peeked = entry.sql and not force and not host.is_live(entry.namespace, object_id)
        try:
            if peeked:
                # Look in the object's own database before waking it for nothing
                # (the engine opens it off the loop, and keeps it for the activation).
                truth = await engine.peek_alarm(entry.namespace, entry.object_id)
                if truth is None or truth > self._now_ms():
                    await self._reindex(entry, truth)
                    return False
            delivery = _Delivery(entry, self._now_ms(), force=force)
            try:
                await host.dispatch(entry.namespace, object_id, delivery)
            except RuntimeClosed:
                return False  # shutting down: not an attempt; the row stays for next time
            except (ObjectRaised, RoostError) as exc:
                await self._failed_delivery(entry, object_id, delivery.due)
                if force:
                    raise (exc.error if isinstance(exc, ObjectRaised) else exc) from None
                return False
        finally:
            if peeked:
                engine.release_peeked(entry.namespace, entry.object_id)
        if delivery.ran:
            self._delivered += 1
        if entry.sql and delivery.storage is not None:
            await self._reindex_from(entry, delivery.storage)
        return delivery.ran

    async def _failed_delivery(
        self, entry: AlarmEntry, object_id: ObjectId, seen: int | None
    ) -> None:
        self._failed += 1
        retries = entry.retry_count + 1
        if retries <= MAX_RETRIES:
            delay_ms = round(retry_delay(retries) * 1000)
            log.warning(
                "alarm() of %s %s failed; retry %d in %.0f s",
                entry.namespace,
                entry.object_id[:12],
                retries,
                delay_ms / 1000,
            )
            due = self._now_ms() + delay_ms
            if await self._host.engine.update_alarm(entry, due_ms=due, retry_count=retries):
                self.notify(due)
            return
        log.error(
            "alarm() of %s %s failed %d times; giving up",
            entry.namespace,
            entry.object_id[:12],
            retries,
        )
        self._given_up += 1

        async def drop(instance: DurableObject) -> Storage:
            storage = instance.ctx.storage
            if storage._alarm_due() == seen:
                await storage.delete_alarm()
            return storage

        with contextlib.suppress(ObjectRaised, RoostError):
            storage = await self._host.dispatch(entry.namespace, object_id, drop)
            if entry.sql:
                await self._reindex_from(entry, storage)

    async def _reindex_from(self, entry: AlarmEntry, storage: Storage) -> None:
        # The index row of a SQL object may be raised to no later than both the
        # object's current view and its last durable alarm: if a pending write
        # fails, the durable one is what remains.
        try:
            current, durable = storage._alarm_due(), storage._durable_alarm()
        except RoostError:
            return  # the object was reset: leave the row, it is early enough
        values = [v for v in (current, durable) if v is not None]
        await self._reindex(entry, min(values) if values else None)

    async def _reindex(self, entry: AlarmEntry, truth: int | None) -> None:
        # Re-read the row now: any set_alarm after this point lowers it again
        # after our update (the group commit applies index writes in order).
        fresh = self._host.engine.alarm_entry(entry.namespace, entry.object_id)
        if fresh is None or (truth is not None and fresh.due_ms == truth):
            return
        changed = await self._host.engine.update_alarm(fresh, due_ms=truth, retry_count=0)
        if changed and truth is not None:
            self.notify(truth)


class _Delivery:
    """The event that runs one object's ``alarm()``, and what became of it."""

    __slots__ = ("entry", "now", "force", "ran", "due", "storage")

    def __init__(self, entry: AlarmEntry, now: int, *, force: bool) -> None:
        self.entry = entry
        self.now = now
        self.force = force
        #: ``alarm()`` ran and returned.
        self.ran = False
        #: The alarm as the object saw it when the event started.
        self.due: int | None = None
        self.storage: Storage | None = None

    async def __call__(self, instance: DurableObject) -> None:
        storage = instance.ctx.storage
        self.storage = storage
        due = self.due = storage._alarm_due()
        if due is None or (due > self.now and not self.force):
            return
        handler = getattr(instance, "alarm", None)
        if handler is None:
            log.error("%s has an alarm but no alarm() method; deleting it", type(instance))
            await storage.delete_alarm()
            return
        storage._alarm_started()
        try:
            await _call_alarm(handler, AlarmInfo(self.entry.retry_count))
        except BaseException:
            storage._alarm_finished(succeeded=False)
            raise
        storage._alarm_finished(succeeded=True)
        self.ran = True


_takes_info: dict[Any, bool] = {}


async def _call_alarm(handler: Any, info: AlarmInfo) -> None:
    # alarm() may take the AlarmInfo (as Cloudflare's alarm(alarmInfo)) or nothing.
    func = getattr(handler, "__func__", handler)
    takes = _takes_info.get(func)
    if takes is None:
        try:
            params = list(inspect.signature(handler).parameters.values())
        except (TypeError, ValueError):
            params = []
        takes = _takes_info[func] = any(
            p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params
        )
    await (handler(info) if takes else handler())
