"""The runtime: the activation table of one process, and its lifecycle."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from ..errors import (
    RuntimeClosed,
    UnknownNamespace,
)
from ..ids import ObjectId
from ..object import DurableObject
from ..storage import idsecret
from ..storage.engine import Durability, StorageEngine, check_durability
from ..storage.kv import StorageLimits
from ..storage.memory import MemoryEngine
from ..storage.sqlite import SqliteEngine
from ..storage.sqllimits import SqlLimits
from .alarms import AlarmScheduler
from .clock import Clock, SystemClock
from .deadlines import CallDeadlines
from .host import ObjectHost, RuntimeStatistics
from .namespace import Env, Namespace
from .process import GcThreshold
from .router import LocalRouter, Router
from .socketregistry import SocketRegistry
from .watchdog import LoopWatchdog

__all__ = ["Runtime", "RuntimeStatistics"]

T = TypeVar("T")
log = logging.getLogger("roost.runtime")


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
        self.data_dir = Path(data_dir) if data_dir is not None else None
        if engine is not None and sql_limits is not None:
            raise ValueError("sql_limits configures the runtime's own engine: pass it to `engine`")
        if engine is None:
            engine = (
                MemoryEngine(sql_limits=sql_limits)
                if data_dir is None
                else SqliteEngine(data_dir, durability=durability, sql_limits=sql_limits)
            )
        clock = clock or SystemClock()
        #: The owner side: the objects this process hosts, their events and storage.
        self.host = ObjectHost(
            objects,
            engine,
            clock=clock,
            limits=limits or StorageLimits(),
            idle_timeout=idle_timeout,
            max_live_objects=max_live_objects,
            max_live_sql_objects=max_live_sql_objects,
            max_queue=max_queue,
        )
        self.host.on_first_use = self._ensure_started
        # The caller side: stubs reach objects through the router only.
        #: Stub calls in flight, failed with CallTimeout past ``call_timeout``.
        self.deadlines = CallDeadlines(clock, call_timeout)
        self.watchdog = LoopWatchdog(loop_block_warning)
        self.router: Router = (router or _default_router)(self)
        clash = set(objects) & set(env or {})
        if clash:
            raise ValueError(f"bindings defined twice: {sorted(clash)}")
        secret = engine.id_secret(_given_id_secret(id_secret))
        self.env = Env(
            {
                **(env or {}),
                **{name: Namespace(name, self.router, id_secret=secret) for name in objects},
            }
        )
        self.host.env = self.env
        self._started = False
        self._closing = False
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.host.loop

    async def start(self) -> None:
        """Open storage and start background work (idempotent)."""
        self._ensure_started()

    def _ensure_started(self) -> None:
        if self._started:
            return
        if self._closed or self._closing:
            raise RuntimeClosed("this runtime has been closed")
        loop = asyncio.get_running_loop()
        self.host.start(loop)
        self._started = True
        self._gc.raise_()
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
        if self._started:
            await self.host.drain(grace)
            # Callers of events still stuck get RuntimeClosed instead of waiting forever.
            self.deadlines.close()
            self.deadlines.cancel_all()
            self.router.abandon()
            await self.host.close()
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

    # -- the objects of this process (the owner side, ``self.host``) ----------------

    @property
    def classes(self) -> dict[str, type[DurableObject]]:
        """Binding name to class, for every namespace of the runtime."""
        return self.host.classes

    @property
    def engine(self) -> StorageEngine:
        """The storage engine under the objects."""
        return self.host.engine

    @property
    def clock(self) -> Clock:
        """The runtime's time source."""
        return self.host.clock

    @property
    def limits(self) -> StorageLimits:
        return self.host.limits

    @property
    def idle_timeout(self) -> float:
        return self.host.idle_timeout

    @property
    def max_live_objects(self) -> int:
        return self.host.max_live_objects

    @property
    def max_live_sql_objects(self) -> int | None:
        """The cap on live SQL objects (derived from the open-files limit at start if None)."""
        return self.host.max_live_sql_objects

    @property
    def max_queue(self) -> int:
        return self.host.max_queue

    @property
    def websockets(self) -> SocketRegistry:
        """The open WebSockets of the objects (they outlive instances: hibernation)."""
        return self.host.websockets

    @property
    def alarms(self) -> AlarmScheduler:
        """The scheduler that delivers the objects' alarms."""
        return self.host.alarms

    def is_live(self, namespace: str, object_id: ObjectId) -> bool:
        """True when the object has an instance in memory."""
        return self.host.is_live(namespace, object_id)

    def statistics(self) -> RuntimeStatistics:
        """Counters for metrics and tests."""
        return self.host.statistics()

    def evict_idle(self) -> int:
        """Evict every object idle for ``idle_timeout`` or more; return how many."""
        return self.host.evict_idle()


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
