"""Prometheus metrics of a served app, for ``/metrics`` on the admin port.

Two kinds of figures:

* **read at scrape time** from counters the runtime already keeps
  (``Runtime.statistics()``, the alarm scheduler, the socket registry, the
  storage engine, uvicorn's server state, the data directory's files): nothing
  is added to the hot path for them;
* **observed per event**, because nothing counts them today: events by
  namespace and kind, overloads, queue depth, event duration, and per group
  commit, the commit and ``fsync`` latencies and the batch sizes.
  :class:`EventMetrics` is the storage engine's ``commit_observer`` (told
  each group commit's and each ``fsync``'s cost), and wraps the host's
  ``dispatch`` on the instance for the per-event figures, so a runtime
  without ``/metrics`` pays nothing.  Counting costs a dictionary update per
  event; the event duration is timed on one event in :data:`DEFAULT_SAMPLE_EVERY` (measured in
  ``docs/monitoring.md``: timing every event cost about a tenth of an
  in-process RPC).

Every figure lives in a :class:`prometheus_client.CollectorRegistry` of its
own per server (:func:`make_registry`), never the library's global one, so two
apps in one process (tests) do not mix.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..runtime.host import ObjectHost
    from ..server import App

__all__ = [
    "DEFAULT_SAMPLE_EVERY",
    "EventMetrics",
    "Histogram",
    "RoostCollector",
    "make_registry",
    "storage_bytes",
]

#: One event in this many has its duration timed (a power of two).
DEFAULT_SAMPLE_EVERY: Final = 16

#: Upper bounds of the duration buckets (seconds): 50 µs to 10 s.
DURATION_BUCKETS: Final = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
)  # fmt: skip
#: Upper bounds of the queue-depth buckets (events already waiting or running).
DEPTH_BUCKETS: Final = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
#: Upper bounds of the batch-size buckets (batches per transaction, writes per batch).
SIZE_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)

#: The kinds of events, as the ``kind`` label says them.
KINDS: Final = ("rpc", "fetch", "alarm", "websocket", "other")


class Histogram:
    """A fixed-bucket histogram cheap enough to observe on the event path.

    ``prometheus_client.Histogram`` takes a lock and walks its buckets on every
    observation; this keeps one count per bucket (found by bisection) and
    makes the cumulative buckets only when scraped.
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        # One more than the bounds: the +Inf bucket.
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count one observation of ``value``."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        """How many observations so far."""
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative ``(upper bound, count)`` pairs, ``+Inf`` last, as Prometheus wants."""
        running = 0
        result: list[tuple[str, float]] = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            result.append(("+Inf" if bound == float("inf") else f"{bound:g}", running))
        return result


def _histogram_family(
    name: str,
    documentation: str,
    labels: Sequence[str],
    items: Iterable[tuple[Sequence[str], Histogram]],
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=list(labels))
    for values, histogram in items:
        family.add_metric(list(values), histogram.buckets(), histogram.total)
    return family


def _classify(handler: Any, finish: Any) -> str:
    """The kind of an event, from where its handler was written."""
    code = getattr(handler, "__code__", None)
    qualname = getattr(code, "co_qualname", "") if code is not None else type(handler).__qualname__
    module = getattr(handler, "__module__", "") or type(handler).__module__
    if qualname.startswith("ObjectHost.invoke"):
        return "rpc"
    if qualname.startswith("ObjectHost.deliver_fetch"):
        return "fetch"
    if module.endswith("runtime.alarms"):
        return "alarm"
    if module.endswith("runtime.socketdelivery"):
        return "websocket"
    return "other"


class EventMetrics:
    """Counters and histograms observed on the runtime's event and commit paths.

    :meth:`install` wraps the host's ``dispatch`` (every event of every kind
    passes through it: RPC calls, fetches, alarms, hibernatable WebSocket
    messages) and becomes its engine's ``commit_observer``.
    """

    def __init__(self, *, sample_every: int = DEFAULT_SAMPLE_EVERY) -> None:
        if sample_every < 1 or sample_every & (sample_every - 1):
            raise ValueError(f"sample_every must be a power of two, not {sample_every}")
        self.sample_every = sample_every
        #: Events per kind, per namespace.
        self.events: dict[str, defaultdict[str, int]] = {k: defaultdict(int) for k in KINDS}
        #: Events refused with ObjectOverloaded, per namespace.
        self.overloads: defaultdict[str, int] = defaultdict(int)
        #: Queue depth at each event's arrival, per namespace.
        self.queue_depth: dict[str, Histogram] = {}
        #: Sampled event durations, per (namespace, kind).
        self.durations: dict[tuple[str, str], Histogram] = {}
        self.commit_seconds = Histogram(DURATION_BUCKETS)
        self.fsync_seconds = Histogram(DURATION_BUCKETS)
        self.commit_batches = Histogram(SIZE_BUCKETS)
        self.batch_writes = Histogram(SIZE_BUCKETS)
        #: Whether events are observed (see :meth:`install`).
        self.observing_events = False
        self._kinds: dict[Any, str] = {}
        self._installed: list[object] = []

    # -- installing ------------------------------------------------------------------

    def install(self, host: ObjectHost, *, events: bool = True) -> None:
        """Start observing ``host``'s engine's commits and, with ``events``, its
        events (idempotent).  Without ``events`` nothing is added per event:
        ``roost_events``, ``roost_overloads``, the queue depth and the event
        duration then stay empty."""
        if any(h is host for h in self._installed):
            return
        self._installed.append(host)
        self.observing_events = events
        if events:
            self._wrap_dispatch(host)
        # The engine reports each group commit and fsync (engines that measure them).
        host.engine.commit_observer = self

    def _wrap_dispatch(self, host: ObjectHost) -> None:
        original: Any = host.dispatch  # called with and without finish
        live = host._live
        events = self.events
        overloads = self.overloads
        depths = self.queue_depth
        kinds = self._kinds
        mask = self.sample_every - 1
        tick = 0
        max_queue = host.max_queue

        # A plain function returning dispatch's own coroutine: no extra
        # coroutine per event, except for the sampled ones that are timed.
        def dispatch(
            namespace: str,
            object_id: Any,
            handler: Callable[[Any], Awaitable[Any]],
            finish: Callable[[Any], Any] | None = None,
        ) -> Awaitable[Any]:
            nonlocal tick
            key = getattr(handler, "__code__", None) or type(handler)
            kind = kinds.get(key)
            if kind is None:
                kind = kinds[key] = _classify(handler, finish)
            events[kind][namespace] += 1
            act = live.get(object_id.hex)
            depth = act.events if act is not None else 0
            # The admission check run_event makes when this coroutine starts:
            # every caller awaits it at once, so nothing changes in between.
            if depth >= max_queue:
                overloads[namespace] += 1
            coro: Awaitable[Any] = original(namespace, object_id, handler, finish)
            tick += 1
            if tick & mask:
                return coro
            histogram = depths.get(namespace)
            if histogram is None:
                histogram = depths[namespace] = Histogram(DEPTH_BUCKETS)
            histogram.observe(depth)
            return self._timed(coro, namespace, kind)

        host.dispatch = dispatch  # type: ignore[assignment,method-assign]

    async def _timed(self, coro: Awaitable[Any], namespace: str, kind: str) -> Any:
        start = time.perf_counter()
        try:
            return await coro
        finally:
            histogram = self.durations.get((namespace, kind))
            if histogram is None:
                histogram = self.durations[namespace, kind] = Histogram(DURATION_BUCKETS)
            histogram.observe(time.perf_counter() - start)

    # -- the engine's CommitObserver ------------------------------------------------

    def committed(self, seconds: float, writes_per_batch: list[int]) -> None:
        """One group commit: its seconds and each object batch's writes."""
        self.commit_seconds.observe(seconds)
        self.commit_batches.observe(len(writes_per_batch))
        observe = self.batch_writes.observe
        for writes in writes_per_batch:
            observe(writes)

    def synced(self, seconds: float) -> None:
        """One fsync (in the engine's sync thread; only it observes this histogram)."""
        self.fsync_seconds.observe(seconds)

    # -- exposing ------------------------------------------------------------------

    def families(self) -> Iterator[Metric]:
        """The observed figures as Prometheus metric families."""
        events = CounterMetricFamily(
            "roost_events",
            "Events delivered to objects (rpc, fetch, alarm, websocket), by namespace and kind.",
            labels=["namespace", "kind"],
        )
        for kind, per_namespace in self.events.items():
            for namespace, count in list(per_namespace.items()):
                events.add_metric([namespace, kind], count)
        yield events
        overloads = CounterMetricFamily(
            "roost_overloads",
            "Events refused with ObjectOverloaded (the object's queue was full).",
            labels=["namespace"],
        )
        for namespace, count in list(self.overloads.items()):
            overloads.add_metric([namespace], count)
        yield overloads
        yield _histogram_family(
            "roost_event_queue_depth",
            f"Events already waiting or running in the object when an event arrived "
            f"(one event in {self.sample_every} is observed).",
            ["namespace"],
            [((ns,), h) for ns, h in list(self.queue_depth.items())],
        )
        yield _histogram_family(
            "roost_event_duration_seconds",
            f"Time from an event's arrival to its result leaving the output gate "
            f"(one event in {self.sample_every} is timed).",
            ["namespace", "kind"],
            list(self.durations.items()),
        )
        yield _histogram_family(
            "roost_commit_duration_seconds",
            "Time to apply and commit one group commit (one SQLite transaction), on the loop.",
            [],
            [((), self.commit_seconds)],
        )
        yield _histogram_family(
            "roost_fsync_duration_seconds",
            "Time of one fsync of the write-ahead log (in the sync thread).",
            [],
            [((), self.fsync_seconds)],
        )
        yield _histogram_family(
            "roost_commit_batches",
            "Object batches per group commit.",
            [],
            [((), self.commit_batches)],
        )
        yield _histogram_family(
            "roost_batch_writes",
            "Keys written or deleted per object batch.",
            [],
            [((), self.batch_writes)],
        )


def storage_bytes(data_dir: Path | None) -> dict[str, int]:
    """Bytes on disk of a data directory: the shared KV database, its WAL, the SQL objects.

    Walks the SQL objects' directory: run it off the event loop.
    """
    if data_dir is None:
        return {}
    sizes = {"kv": 0, "wal": 0, "sql": 0}
    for name, part in (("objects.sqlite3", "kv"), ("objects.sqlite3-wal", "wal")):
        with contextlib.suppress(OSError):
            sizes[part] = os.stat(data_dir / name).st_size
    stack = [data_dir / "objects"]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    sizes["sql"] += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return sizes


class RoostCollector(Collector):
    """Reads the runtime's own counters at scrape time (nothing on the hot path)."""

    def __init__(self, app: App, events: EventMetrics) -> None:
        self.app = app
        self.events = events
        #: uvicorn's server state of the app's server (requests, connections), if known.
        self.server_state: Any = None
        #: The last :func:`storage_bytes` reading (refreshed by the /metrics handler).
        self.storage: dict[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        runtime: Runtime = self.app.runtime
        stats = runtime.statistics()
        yield _gauge(
            "roost_info",
            "The server's durability setting.",
            1,
            durability=str(getattr(runtime.engine, "durability", None) or "memory"),
        )
        live = GaugeMetricFamily(
            "roost_live_objects", "Objects with an instance in memory.", labels=["namespace"]
        )
        per_namespace = dict.fromkeys(runtime.classes, 0)
        for act in list(runtime.host._live.values()):
            per_namespace[act.namespace] = per_namespace.get(act.namespace, 0) + 1
        for namespace, count in per_namespace.items():
            live.add_metric([namespace], count)
        yield live
        yield _counter("roost_activations", "Instances made (constructors run).", stats.activations)
        yield _counter("roost_evictions", "Idle instances evicted from memory.", stats.evictions)
        yield _counter("roost_resets", "Instances reset (failed commit, abort).", stats.resets)
        yield _gauge("roost_events_in_flight", "Events running now.", stats.events_in_flight)
        yield _gauge(
            "roost_pending_outputs", "Results held by the output gate.", stats.pending_outputs
        )
        yield from self.events.families()
        engine = runtime.engine.statistics()
        yield _counter("roost_commits", "Transactions committed (group commits).", engine.commits)
        yield _counter("roost_batches_committed", "Object batches committed.", engine.batches)
        yield _counter("roost_fsyncs", "fsync calls that made commits durable.", engine.syncs)
        alarms = runtime.alarms.statistics()
        yield _counter(
            "roost_alarms_fired", "alarm() handlers that ran to completion.", alarms.delivered
        )
        yield _counter(
            "roost_alarms_retried", "alarm() deliveries that failed (retried later).", alarms.failed
        )
        yield _counter(
            "roost_alarms_given_up", "Alarms dropped after their last retry.", alarms.given_up
        )
        yield _gauge("roost_alarms_in_flight", "alarm() deliveries running now.", alarms.in_flight)
        sockets = runtime.websockets.statistics()
        websockets = GaugeMetricFamily(
            "roost_websockets",
            "WebSockets accepted by objects: held (by a live instance) or hibernatable.",
            labels=["mode"],
        )
        websockets.add_metric(["held"], sockets.held)
        websockets.add_metric(["hibernatable"], sockets.hibernatable)
        yield websockets
        # The App's own set of open connections (read, never changed).
        connections = getattr(self.app, "_connections", ())
        yield _gauge("roost_websocket_connections", "WebSocket connections open.", len(connections))
        on_disk = GaugeMetricFamily(
            "roost_storage_bytes",
            "Bytes of the data directory: kv (the shared database), wal, sql (SQL objects).",
            labels=["part"],
        )
        for part, size in self.storage.items():
            on_disk.add_metric([part], size)
        yield on_disk
        state = self.server_state
        if state is not None:
            yield _counter("roost_http_requests", "HTTP requests served.", state.total_requests)
            yield _gauge("roost_http_connections", "HTTP connections open.", len(state.connections))


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _gauge(name: str, documentation: str, value: float, **labels: str) -> GaugeMetricFamily:
    if not labels:
        return GaugeMetricFamily(name, documentation, value=value)
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


def make_registry(app: App, events: EventMetrics) -> tuple[CollectorRegistry, RoostCollector]:
    """A registry of this server's own: Roost's figures and the process's (CPU, memory, files)."""
    registry = CollectorRegistry(auto_describe=False)
    collector = RoostCollector(app, events)
    registry.register(collector)
    ProcessCollector(registry=registry)
    return registry, collector
