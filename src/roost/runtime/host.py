"""The owner side of the runtime: the objects this process hosts.

:class:`ObjectHost` holds the activation table (one live instance per ID),
each object's event path (through :class:`~.activation.Activation`: gates,
serial events, the output gate), eviction, the alarms it delivers, the
hibernated WebSockets of its objects, and the storage engine under them.  It
knows nothing of stubs or callers: events reach it through a router
(:mod:`.router`), which is all the caller side (:class:`~.runtime.Runtime`'s
``env``, namespaces and stubs) talks to.  A process that calls objects it does
not host needs no ObjectHost of its own.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from .. import codec
from ..errors import InvalidObjectId, ObjectReset, RpcMethodNotFound, RuntimeClosed
from ..http import RequestMessage, ResponseMessage
from ..ids import ObjectId
from ..object import DurableObject, is_rpc_method
from ..storage.engine import StorageEngine
from ..storage.kv import StorageLimits
from .activation import Activation, ObjectRaised, _Moved
from .alarms import AlarmScheduler
from .clock import Clock
from .namespace import Env
from .process import sql_objects_for_open_files
from .socketregistry import SocketRegistry

__all__ = ["RuntimeStatistics", "ObjectHost"]

T = TypeVar("T")
log = logging.getLogger("roost.runtime")


@dataclass(frozen=True, slots=True)
class RuntimeStatistics:
    """A snapshot of the runtime's objects, for metrics and tests."""

    live_objects: int
    activations: int
    evictions: int
    resets: int
    events_in_flight: int
    pending_outputs: int


class ObjectHost:
    """The objects of one process and everything that runs them (see the module docstring)."""

    def __init__(
        self,
        classes: Mapping[str, type[DurableObject]],
        engine: StorageEngine,
        *,
        clock: Clock,
        limits: StorageLimits,
        idle_timeout: float,
        max_live_objects: int,
        max_live_sql_objects: int | None,
        max_queue: int,
    ) -> None:
        self.classes: dict[str, type[DurableObject]] = dict(classes)
        self.engine = engine
        self.clock = clock
        self.limits = limits
        self.idle_timeout = idle_timeout
        self.max_live_objects = max_live_objects
        #: The cap on live SQL objects (set from the open-files limit at start if None).
        self.max_live_sql_objects = max_live_sql_objects
        self.max_queue = max_queue
        #: The bindings objects see as ``self.env`` (set by whoever builds the host).
        self.env = Env({})
        #: Called when an event arrives before :meth:`start` (the runtime starts lazily).
        self.on_first_use: Callable[[], None] = self._not_started
        # Keyed by the ID's hex alone: IDs of different namespaces never share
        # one (roost.ids), and a str key costs less per event than a tuple.
        self._live: OrderedDict[str, Activation] = OrderedDict()
        # The SQL objects among them, in the same order: each holds two files open.
        self._live_sql: OrderedDict[str, Activation] = OrderedDict()
        # Sweep epochs: each activation carries the epoch of its last event
        # start, so a sweep can stop at the first activation touched after the
        # idle cutoff instead of visiting every live object (see evict_idle).
        self._epoch = 0
        self._epoch_starts: deque[tuple[int, float]] = deque([(0, self.clock.monotonic())])
        #: Open WebSockets per object; outlives instances (hibernation).
        self.websockets = SocketRegistry()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False
        self._activations = 0
        self._evictions = 0
        self._resets = 0
        #: Delivers alarms (runtime/alarms.py).
        self.alarms = AlarmScheduler(self)

    # -- lifecycle -----------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeClosed("the runtime is not started")
        return self._loop

    def _not_started(self) -> None:
        raise RuntimeClosed("the runtime is not started")

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open storage and start eviction and alarms on ``loop``."""
        if self.max_live_sql_objects is None:
            self.max_live_sql_objects = sql_objects_for_open_files()
        self.engine.start(loop)
        self._loop = loop
        self._sweeper = loop.create_task(self._sweep_forever(), name="roost-eviction")
        self.alarms.start(loop)

    async def drain(self, grace: float) -> None:
        """Take no more events; wait up to ``grace`` seconds for those in flight."""
        self._closing = True
        if self._loop is None:
            return
        await self.alarms.close()
        # Let in-flight events and held outputs finish (bounded: a stuck
        # event must not hang shutdown forever).
        for _ in range(max(0, round(grace / 0.01))):
            busy = [a for a in self._live.values() if a.events or a.pending_outputs]
            if not busy:
                break
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        """Commit what is held, stop background work, close storage (after :meth:`drain`)."""
        self._closing = True
        if self._loop is None:
            return
        for act in list(self._live.values()):
            barrier = act.storage._output_barrier()
            if barrier is not None:
                try:
                    await barrier
                except Exception:
                    log.exception("final commit failed for %s %s", act.namespace, act.object_id)
        if self._sweeper is not None:
            self._sweeper.cancel()
        for act in list(self._live.values()):
            for task in list(act.background):
                task.cancel()
        self._live.clear()
        self._live_sql.clear()
        await self.engine.close()

    # -- the activation table ------------------------------------------------------

    def _activation(self, namespace: str, object_id: ObjectId) -> Activation:
        if self._closing:
            raise RuntimeClosed("the runtime is shutting down")
        if self._loop is None:
            self.on_first_use()
        act = self._live.get(object_id.hex)
        if act is not None:
            if act.namespace != namespace:
                # Unreachable through stubs (Namespace.get checks the ID's MAC).
                raise InvalidObjectId(
                    f"ID {object_id.hex[:12]}… belongs to namespace {act.namespace!r}, "
                    f"not {namespace!r}"
                )
            # Least-recently-used order at the sweep's granularity: an object
            # moves to the back once per epoch, not on every event, which is
            # all evict_idle's stopping rule needs.
            if act.epoch != self._epoch:
                self._live.move_to_end(act.object_id.hex)
                if act.cls.sql_enabled:
                    self._live_sql.move_to_end(act.object_id.hex)
                act.epoch = self._epoch
            return act
        cls = self.classes[namespace]
        act = Activation(self, namespace, cls, object_id, self._epoch)
        key = object_id.hex
        self._live[key] = act
        self._activations += 1
        try:
            act.construct()
        except Exception as exc:
            self._live.pop(key, None)
            # Writes the constructor made before it raised are dropped, and the
            # object's files are released for the next attempt.
            act.storage._close(exc)
            raise ObjectRaised(exc, namespace) from None
        if cls.sql_enabled:
            self._live_sql[key] = act
            cap = self.max_live_sql_objects
            if cap is not None and len(self._live_sql) > cap:
                self._evict_over_cap(self._live_sql, cap, act)
        if len(self._live) > self.max_live_objects:
            self._evict_over_cap(self._live, self.max_live_objects, act)
        return act

    def forget(self, act: Activation) -> None:
        """Remove a reset activation from the table (called by the activation)."""
        if self._live.get(act.object_id.hex) is act:
            del self._live[act.object_id.hex]
            self._live_sql.pop(act.object_id.hex, None)
            self._resets += 1

    def _evict(self, act: Activation) -> None:
        del self._live[act.object_id.hex]
        self._live_sql.pop(act.object_id.hex, None)
        act.storage._close(ObjectReset("object was evicted"))
        act.instance = None
        self._evictions += 1

    def _evict_over_cap(
        self, table: OrderedDict[str, Activation], cap: int, new: Activation
    ) -> None:
        excess = len(table) - cap
        # Look a little past the excess (the oldest few may be busy), and stop
        # as soon as enough idle ones are found: this runs on every activation
        # past the cap.  The one just made looks idle but is about to serve.
        victims: list[Activation] = []
        for act in itertools.islice(table.values(), excess + 64):
            if act.idle and act is not new:
                victims.append(act)
                if len(victims) == excess:
                    break
        for act in victims:
            self._evict(act)

    def evict_idle(self) -> int:
        """Evict every object idle for ``idle_timeout`` or more; return how many.

        Visits the live table in least-recently-used order (by sweep epoch) and stops at the
        first object whose last event started in an epoch that began after the
        cutoff: nothing behind it can have been idle that long.  A sweep costs
        the expired and busy-old objects, not every live one.
        """
        now = self.clock.monotonic()
        cutoff = now - self.idle_timeout
        starts = self._epoch_starts
        while starts and starts[0][1] <= cutoff:
            starts.popleft()
        # The first epoch that began after the cutoff (none: every epoch is old).
        stop = starts[0][0] if starts else self._epoch + 1
        expired: list[Activation] = []
        for act in self._live.values():
            if act.epoch >= stop:
                break
            # Output waits and background work also refresh last_used.
            if act.last_used <= cutoff:
                expired.append(act)
        evicted = 0
        for act in expired:
            if act.idle:
                self._evict(act)
                evicted += 1
        self._epoch += 1
        starts.append((self._epoch, now))
        return evicted

    async def _sweep_forever(self) -> None:
        interval = min(1.0, self.idle_timeout / 4)
        while True:
            await self.clock.sleep(interval)
            try:
                self.evict_idle()
            except Exception:  # pragma: no cover - a bug; keep sweeping
                log.exception("eviction sweep failed")

    def is_live(self, namespace: str, object_id: ObjectId) -> bool:
        """True when the object has an instance in memory."""
        act = self._live.get(object_id.hex)
        return act is not None and act.namespace == namespace

    def statistics(self) -> RuntimeStatistics:
        """Counters for metrics and tests."""
        acts = self._live.values()
        return RuntimeStatistics(
            live_objects=len(self._live),
            activations=self._activations,
            evictions=self._evictions,
            resets=self._resets,
            events_in_flight=sum(a.events for a in acts),
            pending_outputs=sum(a.pending_outputs for a in acts),
        )

    # -- events --------------------------------------------------------------------

    @overload
    async def dispatch(
        self, namespace: str, object_id: ObjectId, handler: Callable[[DurableObject], Awaitable[T]]
    ) -> T: ...
    @overload
    async def dispatch(
        self,
        namespace: str,
        object_id: ObjectId,
        handler: Callable[[DurableObject], Awaitable[Any]],
        finish: Callable[[Any], T],
    ) -> T: ...

    async def dispatch(
        self,
        namespace: str,
        object_id: ObjectId,
        handler: Callable[[DurableObject], Awaitable[Any]],
        finish: Callable[[Any], T] | None = None,
    ) -> T:
        """Deliver one event to the object, activating it if needed.

        ``handler(instance)`` runs the event; ``finish``, if given, turns its
        result into the value returned here before the output gate holds it
        (RPC copies the result there, while no other event can change it).
        """
        while True:
            act = self._activation(namespace, object_id)
            try:
                return await act.run_event(handler, finish)
            except _Moved:
                continue  # reset before the event began: deliver to a fresh instance

    def invoke(
        self,
        namespace: str,
        object_id: ObjectId,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Awaitable[Any]:
        """An RPC call (arguments already copied by value); await the result."""
        cls = self.classes[namespace]
        if not is_rpc_method(cls, method):
            raise RpcMethodNotFound(
                f"{cls.__name__} has no RPC method {method!r} (RPC reaches public "
                "`async def` methods other than fetch, alarm and the WebSocket handlers)"
            )

        def call(instance: DurableObject) -> Awaitable[Any]:
            return getattr(instance, method)(*args, **kwargs)  # type: ignore[no-any-return]

        return self.dispatch(namespace, object_id, call, codec.copy_value)

    async def deliver_fetch(
        self, namespace: str, object_id: ObjectId, request: RequestMessage
    ) -> ResponseMessage:
        """An HTTP request for the object's ``fetch`` handler."""
        cls = self.classes[namespace]
        if not callable(getattr(cls, "fetch", None)):
            raise RpcMethodNotFound(f"{cls.__name__} does not define fetch()")

        async def fetch(instance: DurableObject) -> ResponseMessage:
            response = await instance.fetch(request.to_request())  # type: ignore[attr-defined]
            return await ResponseMessage.from_response(response)

        return await self.dispatch(namespace, object_id, fetch)
