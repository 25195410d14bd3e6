"""The runtime: the activation table of one process, and its lifecycle."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, overload

from .. import codec
from ..errors import (
    InvalidObjectId,
    ObjectReset,
    RpcMethodNotFound,
    RuntimeClosed,
    UnknownNamespace,
)
from ..http import RequestMessage, ResponseMessage
from ..ids import ObjectId
from ..object import DurableObject, is_rpc_method
from ..storage import idsecret
from ..storage.engine import Durability, StorageEngine, check_durability
from ..storage.kv import StorageLimits
from ..storage.memory import MemoryEngine
from ..storage.sqlite import SqliteEngine
from ..storage.sqllimits import SqlLimits
from .activation import Activation, ObjectRaised, _Moved
from .alarms import AlarmScheduler
from .clock import Clock, SystemClock
from .deadlines import CallDeadlines
from .namespace import Env, Namespace
from .process import GcThreshold, sql_objects_for_open_files
from .router import LocalRouter, Router
from .socketregistry import SocketRegistry
from .watchdog import LoopWatchdog

__all__ = ["Runtime", "RuntimeStatistics"]

T = TypeVar("T")
log = logging.getLogger("roost.runtime")

@dataclass(frozen=True, slots=True)
class RuntimeStatistics:
    """A snapshot of the runtime, for metrics and tests."""

    live_objects: int
    activations: int
    evictions: int
    resets: int
    events_in_flight: int
    pending_outputs: int


class Runtime:
    """Runs durable objects in this process.

    Parameters
    ----------
    objects:
        Binding name to :class:`~roost.DurableObject` subclass, e.g.
        ``{"COUNTER": Counter}``; each becomes a namespace in ``env``.
    data_dir:
        Directory for durable SQLite storage; ``None`` keeps everything in memory
        (for tests: nothing survives the process).
    idle_timeout:
        Seconds without events after which an idle object is evicted.
    max_live_objects:
        Cap on instances in memory; past it the least recently used idle ones go
        (recency counted in eviction-sweep intervals of up to a second).
    max_live_sql_objects:
        Cap on live SQL objects (``sql=True`` classes), each of which holds its
        database file and its WAL open; past it the least recently used idle
        ones go first.  ``None`` (default) derives it from the process's limit
        on open files when the runtime starts: a quarter of what is left after
        256 descriptors for sockets and the shared database, since as many
        files again may still be closing.
    max_queue:
        Per-object bound on events waiting or running; past it callers get
        :class:`~roost.ObjectOverloaded` at once.
    durability:
        ``"full"`` (fsync before outputs are released; survives power loss) or
        ``"process"`` (survives ``kill -9`` of the server only).
    limits:
        Key and value size limits.
    sql_limits:
        Bounds on SQL objects' queries and databases (:class:`~roost.SqlLimits`:
        time per query, bytes per row and per database); only for the engine
        the runtime makes itself, not with ``engine``.
    env:
        Extra bindings (configuration values) for ``env``.
    clock:
        The time source; tests pass :class:`~roost.testing.ManualClock`.
    engine:
        A storage engine to use instead of the one ``data_dir`` selects.
    gc_threshold:
        First-generation threshold of Python's cyclic garbage collector while
        the runtime runs (``None``: leave the collector alone).  Each young
        collection walks every live young object, which under load means the
        coroutine frames of every event in flight; at Python's default of 700
        allocations that cost 10-20 % of a busy server's time
        (``docs/design.md``).  Applied only when the threshold is still
        Python's default, and restored on :meth:`close`.
    call_timeout:
        Seconds a stub call (RPC or ``fetch``) may take before its caller gets
        :class:`~roost.CallTimeout`, whose outcome is unknown (``None``: no
        limit).  Kept to within a quarter of the timeout.  Calls still waiting
        when :meth:`close` gives up on them fail with :class:`~roost.RuntimeClosed`.
    loop_block_warning:
        Log a warning, with the running stack, when the event loop is held for
        longer than this many seconds (``None``: never): an event that computes
        without awaiting stalls every object of the process.
    router:
        Makes the router through which stubs reach the objects (default:
        :class:`~roost.runtime.router.LocalRouter`, a direct call).
        :class:`~roost.runtime.loopback.LoopbackRouter` sends every event as
        bytes through a task of its own, as a router to another process does;
        the test suite runs through both.
    id_secret:
        The secret that keys object IDs (at least 16 bytes; default: the
        ``ROOST_ID_SECRET`` environment variable, else the secret the data
        directory keeps, made when it was created).  Give it to share one
        secret between deployments; see ``docs/storage.md``, "Object IDs".
    """

    def __init__(
        self,
        objects: Mapping[str, type[DurableObject]],
        *,
        data_dir: str | Path | None = None,
        idle_timeout: float = 10.0,
        max_live_objects: int = 10_000,
        max_live_sql_objects: int | None = None,
        max_queue: int = 5_000,
        durability: Durability = "full",
        limits: StorageLimits | None = None,
        sql_limits: SqlLimits | None = None,
        env: Mapping[str, Any] | None = None,
        clock: Clock | None = None,
        engine: StorageEngine | None = None,
        gc_threshold: int | None = 50_000,
        call_timeout: float | None = 30.0,
        loop_block_warning: float | None = 1.0,
        id_secret: str | bytes | None = None,
        router: Callable[[Runtime], Router] | None = None,
    ) -> None:
        for name, cls in objects.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"binding names are non-empty str, not {name!r}")
            if not (isinstance(cls, type) and issubclass(cls, DurableObject)):
                raise TypeError(f"binding {name!r} must be a DurableObject subclass, not {cls!r}")
        check_durability(durability)
        if idle_timeout <= 0 or max_live_objects < 1 or max_queue < 1:
            raise ValueError("idle_timeout, max_live_objects and max_queue must be positive")
        if max_live_sql_objects is not None and (
            isinstance(max_live_sql_objects, bool) or max_live_sql_objects < 1
        ):
            raise ValueError(
                f"max_live_sql_objects must be a positive int or None, not {max_live_sql_objects!r}"
            )
        self._gc = GcThreshold(gc_threshold)
        self.gc_threshold = gc_threshold
        self.classes: dict[str, type[DurableObject]] = dict(objects)
        self.data_dir = Path(data_dir) if data_dir is not None else None
        if engine is not None and sql_limits is not None:
            raise ValueError("sql_limits configures the runtime's own engine: pass it to `engine`")
        if engine is None:
            engine = (
                MemoryEngine(sql_limits=sql_limits)
                if data_dir is None
                else SqliteEngine(data_dir, durability=durability, sql_limits=sql_limits)
            )
        self.engine = engine
        self.idle_timeout = idle_timeout
        self.max_live_objects = max_live_objects
        #: The cap on live SQL objects (set from the open-files limit at start if None).
        self.max_live_sql_objects = max_live_sql_objects
        self.max_queue = max_queue
        self.limits = limits or StorageLimits()
        self.clock = clock or SystemClock()
        #: Stub calls in flight, failed with CallTimeout past ``call_timeout``.
        self.deadlines = CallDeadlines(self.clock, call_timeout)
        self.watchdog = LoopWatchdog(loop_block_warning)
        self.router: Router = (router or _default_router)(self)
        clash = set(objects) & set(env or {})
        if clash:
            raise ValueError(f"bindings defined twice: {sorted(clash)}")
        secret = self.engine.id_secret(_given_id_secret(id_secret))
        self.env = Env(
            {
                **(env or {}),
                **{name: Namespace(name, self.router, id_secret=secret) for name in objects},
            }
        )
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
        self._closed = False
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

    async def start(self) -> None:
        """Open storage and start background work (idempotent)."""
        self._ensure_started()

    def _ensure_started(self) -> None:
        if self._loop is not None:
            return
        if self._closed:
            raise RuntimeClosed("this runtime has been closed")
        loop = asyncio.get_running_loop()
        if self.max_live_sql_objects is None:
            self.max_live_sql_objects = sql_objects_for_open_files()
        self.engine.start(loop)
        self._loop = loop
        self._gc.raise_()
        self._sweeper = loop.create_task(self._sweep_forever(), name="roost-eviction")
        self.alarms.start(loop)
        self.deadlines.start(loop)
        self.watchdog.start(loop)

    async def close(self, *, grace: float = 10.0) -> None:
        """Stop taking events, let running ones finish, commit all writes, close storage.

        Events still running after ``grace`` seconds are cancelled: their
        callers get :class:`~roost.RuntimeClosed`.
        """
        if self._closed or self._closing:
            return
        self._closing = True
        if self._loop is not None:
            await self.alarms.close()
            # Let in-flight events and held outputs finish (bounded: a stuck
            # event must not hang shutdown forever).
            for _ in range(max(0, round(grace / 0.01))):
                busy = [a for a in self._live.values() if a.events or a.pending_outputs]
                if not busy:
                    break
                await asyncio.sleep(0.01)
            # Callers of events still stuck get RuntimeClosed instead of waiting forever.
            self.deadlines.close()
            self.deadlines.cancel_all()
            self.router.abandon()
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
            self.watchdog.close()
            self._gc.restore()
        self._closed = True

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- the activation table ------------------------------------------------------

    def _activation(self, namespace: str, object_id: ObjectId) -> Activation:
        if self._closing:
            raise RuntimeClosed("the runtime is shutting down")
        if self._loop is None:
            self._ensure_started()
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

    def list_object_ids(self, namespace: Namespace | str) -> list[ObjectId]:
        """IDs of the objects of ``namespace`` (``env.NAME``, or its name) that have
        stored data."""
        if isinstance(namespace, Namespace):
            if self.env.get(namespace.name) is not namespace:
                raise UnknownNamespace(f"{namespace!r} is not a namespace of this runtime")
            namespace = namespace.name
        if namespace not in self.classes:
            known = ", ".join(sorted(self.classes)) or "none"
            raise UnknownNamespace(f"no namespace named {namespace!r} (namespaces: {known})")
        self._ensure_started()
        ns = self.env[namespace]
        return [ns.id_from_string(h) for h in self.engine.list_object_ids(namespace)]

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


#: The router of a runtime given none (tests run the suite through another).
_default_router: Callable[[Runtime], Router] = LocalRouter

def _given_id_secret(given: str | bytes | None) -> bytes | None:
    """The deployer's ID secret: ``given``, else ``ROOST_ID_SECRET``, else None."""
    if given is not None:
        return idsecret.check_secret(given, "id_secret")
    from_env = os.environ.get(idsecret.ENV_VAR)
    if from_env:
        return idsecret.check_secret(from_env, idsecret.ENV_VAR)
    return None
