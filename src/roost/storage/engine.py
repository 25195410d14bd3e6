"""The storage seam: what the runtime asks of a storage engine.

An engine holds the durable state of many objects.  The runtime talks to it
through two small interfaces:

* :class:`StorageEngine` opens one :class:`ObjectStore` per live object and is
  started and closed with the runtime.
* :class:`ObjectStore` reads one object's committed state (synchronously: an
  embedded engine answers from its page cache faster than a thread hop) and
  commits a :class:`WriteBatch` through one narrow, pipelined call,
  :meth:`ObjectStore.commit`.  That call is the place where a later cluster
  engine adds an ownership epoch and fails with "ownership lost".

A batch's life, per object: the first write of a loop turn opens it and asks
the store to seal it (:meth:`ObjectStore.seal_soon`); on the next turn the
engine runs the seals of every object at once, each hands its batch to
:meth:`ObjectStore.commit`, and the engine commits them as one group.  The
engine settles each batch's :class:`CommitFuture` itself, in the order the
batches of an object were submitted, so a batch costs the engine one list
entry and one future, never a callback of its own.

When a batch fails, the store is *broken*: that batch and every later batch of
it fail, and the runtime resets the object (the future's ``on_failure``, before
any waiter sees the error).

Objects of SQL classes (``sql=True``) get a store with a database of their own
(:attr:`ObjectStore.database`); their SQL writes join the same batches.

Alarms: each object has at most one, written in its batches like a key.  The
engine also keeps an *alarm index* ordered by due time, which the runtime's
scheduler reads in order (:meth:`StorageEngine.due_alarms`).  For KV-only
objects the index row *is* the alarm; for SQL objects the alarm lives in the
object's own database and the index holds a due time no later than it (see
``docs/alarms.md``).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

from ..errors import CommitFailed
from . import idsecret

if TYPE_CHECKING:
    from .catalogue import CatalogueEntry, ObjectUsage
    from .objectdb import ObjectDatabase

__all__ = [
    "AlarmEntry",
    "CommitFuture",
    "CommitObserver",
    "CommitQueue",
    "Durability",
    "ListQuery",
    "ObjectStore",
    "StorageEngine",
    "WriteBatch",
    "check_durability",
]

#: ``"full"``: a commit is fsynced before its outputs are released; survives
#: ``kill -9`` and power loss.  ``"process"``: written to the OS before release;
#: survives ``kill -9`` of the server, not a power cut or kernel crash.
Durability = Literal["full", "process"]


def check_durability(value: object) -> Durability:
    """``value`` if it is a :data:`Durability`, else a ``ValueError`` that says so."""
    if value not in ("full", "process"):
        raise ValueError(f"durability must be 'full' or 'process', not {value!r}")
    return value


T = TypeVar("T")


@dataclass(slots=True)
class WriteBatch:
    """One object's writes that commit atomically: all of them or none."""

    #: When true, every key of the object is deleted before ``writes`` apply.
    clear: bool = False
    #: Key to encoded value; ``None`` deletes the key.
    writes: dict[str, bytes | None] = field(default_factory=dict)
    #: True when the batch changes the alarm to ``alarm_ms``.
    alarm_changed: bool = False
    #: The new alarm (epoch milliseconds), or ``None`` to delete it.
    alarm_ms: int | None = None
    #: True when the object's own database holds SQL writes of this batch
    #: (made directly on its open transaction by ``storage.sql.exec``).
    sql: bool = False

    def __bool__(self) -> bool:
        return self.clear or bool(self.writes) or self.alarm_changed or self.sql

    def set_alarm(self, alarm_ms: int | None) -> None:
        """Make this batch set the alarm to ``alarm_ms`` (``None``: delete it)."""
        self.alarm_changed = True
        self.alarm_ms = alarm_ms


@dataclass(frozen=True, slots=True)
class AlarmEntry:
    """One row of the alarm index, as the scheduler reads it."""

    namespace: str
    object_id: str
    #: When the scheduler should next look at the object (epoch ms): the alarm
    #: time, or the time of the next retry after a failure.
    due_ms: int
    #: Failed deliveries so far.
    retry_count: int
    #: Bumped by every write of the row; updates by the scheduler are
    #: compare-and-set on it, so they never undo a newer ``set_alarm``.
    gen: int
    #: True when the alarm itself lives in the object's own (SQL) database and
    #: this row is only a lower bound of its time.
    sql: bool


@dataclass(frozen=True, slots=True)
class ListQuery:
    """A key range of one object, already normalised to bounds.

    ``low`` is inclusive (exclusive when ``low_open``), ``high`` exclusive;
    ``None`` means unbounded.  ``limit`` counts rows after ordering.
    """

    low: str | None = None
    low_open: bool = False
    high: str | None = None
    reverse: bool = False
    limit: int | None = None

    def sql_tail(self) -> tuple[str, list[object]]:
        """The range as SQL to append after ``WHERE ...`` on a ``key`` column,
        with its parameters (for engines built on SQL)."""
        sql: list[str] = []
        params: list[object] = []
        if self.low is not None:
            sql.append("AND key > ?" if self.low_open else "AND key >= ?")
            params.append(self.low)
        if self.high is not None:
            sql.append("AND key < ?")
            params.append(self.high)
        sql.append("ORDER BY key DESC" if self.reverse else "ORDER BY key")
        if self.limit is not None:
            sql.append("LIMIT ?")
            params.append(self.limit)
        return " ".join(sql), params

    def contains(self, key: str) -> bool:
        if self.low is not None and (key < self.low or (self.low_open and key == self.low)):
            return False
        return self.high is None or key < self.high


class CommitFuture(asyncio.Future[None]):
    """The durability of one batch: the engine settles it, and every output
    that depends on the batch awaits it.

    Many callers wait on the same future, so one caller's cancellation must not
    cancel it for all: ``cancel()`` is refused, and a cancelled waiter gets its
    ``CancelledError`` once the commit has settled.

    Failing it first calls its :attr:`on_failure` (the runtime resets the
    object there), so no waiter can see the error while the object still runs.
    """

    # A slot set after creation, not an __init__: a Python __init__ would
    # double what making the future costs, once per batch.
    __slots__ = ("on_failure",)

    #: Called once with the error if the batch fails (unset or ``None``: nothing).
    on_failure: Callable[[BaseException], None] | None

    def cancel(self, msg: object = None) -> bool:
        return False

    def set_exception(self, exception: type | BaseException, /) -> None:
        hook = getattr(self, "on_failure", None)
        self.on_failure = None
        if hook is not None:
            hook(exception if isinstance(exception, BaseException) else exception())
        if not self.done():  # the hook may have failed it already (a reset closes the store)
            super().set_exception(exception)
            self.exception()  # retrieved: callers that left early must not log it


class CommitQueue(Generic[T]):
    """What an engine commits on the next turn of the event loop.

    Stores add the *seal* of their open batch (:meth:`seal_soon`) and the
    engine adds its own work (:meth:`put`); the first addition of a turn
    schedules ``flush``, which calls :meth:`take`: every seal runs (queuing
    its batch here) and the whole queue comes back as one group.  One callback
    per turn for all objects, and no seal can miss the commit that follows it.
    """

    __slots__ = ("_loop", "_flush", "_seals", "_items", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop, flush: Callable[[], None]) -> None:
        self._loop = loop
        self._flush = flush
        self._seals: list[Callable[[], None]] = []
        self._items: list[T] = []
        self._scheduled = False

    def seal_soon(self, seal: Callable[[], None]) -> None:
        self._seals.append(seal)
        self._schedule()

    def put(self, item: T) -> None:
        self._items.append(item)
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def take(self) -> list[T]:
        """Run the seals, then empty the queue (in the order things were added)."""
        while self._seals:  # a seal queues items, never another seal; loop to be sure
            seals, self._seals = self._seals, []
            for seal in seals:
                try:
                    seal()
                except Exception as exc:  # a bug in one seal must not strand the others
                    self._loop.call_exception_handler(
                        {"message": "sealing a batch failed", "exception": exc}
                    )
        items, self._items = self._items, []
        self._scheduled = False
        return items


#: What became of one queued write: its future, its result, its error.
Outcome = tuple["asyncio.Future[Any]", Any, "BaseException | None"]


def resolve_outcomes(outcomes: list[Outcome]) -> None:
    """Settle each future with its result or error (on the event loop)."""
    for future, result, error in outcomes:
        if future.done():
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


def broken_error(store: ObjectStore) -> CommitFailed:
    """The error of a batch queued after an earlier batch of ``store`` failed."""
    return CommitFailed(f"an earlier commit of this object failed: {store.broken}")


class ObjectStore(ABC):
    """One object's durable state inside an engine."""

    #: True for the stores of SQL objects (they have :attr:`database`).
    sql_capable: bool = False

    def __init__(self, namespace: str, object_id: str) -> None:
        self.broken: BaseException | None = None
        #: The object's namespace (binding name).
        self.namespace = namespace
        #: The object's ID (64 hex characters).
        self.object_id = object_id

    @property
    def database(self) -> ObjectDatabase | None:
        """The object's own SQL database (``None`` for KV-only objects)."""
        return None

    @abstractmethod
    def read_alarm(self) -> int | None:
        """The object's alarm (epoch ms) as last committed, or ``None``."""

    def durable_alarm(self) -> int | None:
        """The alarm as of the last batch known durable (SQL stores refine this)."""
        return self.read_alarm()

    def close(self) -> None:
        """Release what the store holds (the object was evicted or reset).

        Uncommitted writes are dropped; batches already handed to :meth:`commit`
        still complete.  Stores that hold nothing keep this default.
        """
        return None

    @abstractmethod
    def seal_soon(self, seal: Callable[[], None]) -> None:
        """Call ``seal`` on the next turn of the event loop, just before the
        engine's next group commit (``seal`` then calls :meth:`commit`).

        Writes made until then join the open batch.  Once the engine is
        closed, ``seal`` still runs (and its :meth:`commit` fails).
        """

    @abstractmethod
    def read(self, keys: list[str]) -> dict[str, bytes]:
        """Committed values of ``keys`` (absent keys are left out)."""

    @abstractmethod
    def read_range(self, query: ListQuery) -> list[tuple[str, bytes]]:
        """Committed ``(key, value)`` pairs in ``query``, in its order."""

    @abstractmethod
    def commit(self, batch: WriteBatch, done: CommitFuture) -> None:
        """Queue ``batch``; settle ``done`` once it is durable.

        Never blocks.  ``done`` settles no earlier than the ``done`` of every
        batch this store was given before; it fails with
        :class:`roost.CommitFailed` when the batch could not be made durable,
        or when an earlier batch of this store failed.  Raises (and leaves
        ``done`` alone) when the engine is closed.
        """


#: Called in the engine with each batch before it is applied; raising makes
#: that batch fail.  Tests use it to inject commit failures.
FaultHook = Callable[["ObjectStore", WriteBatch], None]


@dataclass(frozen=True, slots=True)
class EngineStatistics:
    """Counters of a storage engine, for metrics and benchmarks."""

    #: Transactions committed (one per group commit).
    commits: int
    #: Object batches in those transactions.
    batches: int
    #: ``fsync`` calls that made commits durable (0 where nothing is synced).
    syncs: int


# == Export and import (roost.admin.archive) ==================================
# What `roost export`, `roost import` and `roost backup` ask of an engine, kept
# apart from the rest of the seam: they read and write through these, never
# through an engine's files, so a later engine (a cluster's) can be exported and
# imported the same way.

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path


@dataclass(frozen=True, slots=True)
class ExportedObject:
    """One object's committed state, as an export reads it and an import writes it."""

    namespace: str
    object_id: str
    #: True for an object of a SQL class: its KV entries and alarm live in its
    #: own database, which :meth:`StorageSnapshot.copy_database` copies whole.
    sql: bool = False
    #: A KV-only object's ``(key, encoded value)`` pairs, in key order; the
    #: values are the codec's bytes, never decoded.
    entries: list[tuple[str, bytes]] = field(default_factory=list)
    #: The alarm (epoch ms), or ``None``.
    alarm_ms: int | None = None
    #: The name the ID was made from, as the catalogue records it (``None``: unknown).
    name: str | None = None


@dataclass(frozen=True, slots=True)
class IdScheme:
    """How a storage's object IDs are keyed (``docs/storage.md``, "Object IDs").

    ``kind`` is ``"stored"`` (the secret is kept with the data, and ``secret``
    holds it), ``"given"`` (the deployer gives it in ``ROOST_ID_SECRET``; only
    its ``fingerprint`` is known) or ``"unkeyed"`` (a directory from before
    keyed IDs).
    """

    kind: Literal["stored", "given", "unkeyed"]
    fingerprint: str | None = None
    secret: bytes | None = field(default=None, repr=False)


class StorageSnapshot(ABC):
    """A read-only view of an engine's committed state, for export.

    Every KV-only object is read as of one point in time (the moment the
    snapshot was taken); each SQL object's database is copied consistently as
    of the moment :meth:`copy_database` reads it.
    """

    @abstractmethod
    def id_scheme(self, given: bytes | None) -> IdScheme:
        """How the IDs of this storage are keyed; ``given`` is ``ROOST_ID_SECRET``."""

    @abstractmethod
    def namespaces(self) -> list[str]:
        """Every namespace that holds an object, sorted."""

    @abstractmethod
    def count_objects(self, namespace: str) -> int:
        """How many objects :meth:`objects` yields for ``namespace`` (for progress)."""

    @abstractmethod
    def objects(self, namespace: str) -> Iterator[ExportedObject]:
        """The objects of ``namespace`` that hold data: KV-only objects with their
        entries and alarm, SQL objects without (see :meth:`copy_database`)."""

    @abstractmethod
    def copy_database(self, namespace: str, object_id: str, target: Path) -> int | None:
        """Write a consistent copy of a SQL object's database to the new file
        ``target``; return the alarm it holds."""

    def close(self) -> None:
        """Release what the snapshot holds (its read transaction)."""
        return None

    def __enter__(self) -> StorageSnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CommitObserver(Protocol):
    """Told what each group commit cost (``roost.admin.metrics`` is one).

    ``committed`` runs on the event loop after a group commit, with its
    seconds and the number of writes of each object batch in it; ``synced``
    runs in the engine's sync thread with the seconds of one ``fsync``.  Both
    must be quick: they are on the commit path.
    """

    def committed(self, seconds: float, writes_per_batch: list[int]) -> None: ...

    def synced(self, seconds: float) -> None: ...


class StorageEngine(ABC):
    """A place where many objects keep their state."""

    #: Transactions committed, and the object batches they carried.
    commits: int = 0
    batches_committed: int = 0

    def statistics(self) -> EngineStatistics:
        """How much the engine has committed and synced so far."""
        return EngineStatistics(self.commits, self.batches_committed, self._syncs())

    def _syncs(self) -> int:
        return 0

    def __init__(self) -> None:
        #: The next group commit (made by :meth:`start`).
        self._queue: CommitQueue[Any] | None = None
        self._closed = False
        self.fault_hook: FaultHook | None = None
        #: Called on the event loop with the due time (epoch ms) of every alarm a
        #: committed batch set; the scheduler uses it to wake up early.
        self.alarm_listener: Callable[[int], None] | None = None
        #: Told the cost of each group commit and fsync (engines that measure them).
        self.commit_observer: CommitObserver | None = None

    def id_secret(self, given: bytes | None) -> bytes:
        """The secret that keys object IDs of this storage (``roost.ids``).

        ``given`` is the deployer's (``ROOST_ID_SECRET``); without it, storage
        that outlives the process must keep its own, since every stored object
        is found by an ID made with it.  This one lives in memory: one secret
        per process.
        """
        return given if given is not None else idsecret.process_secret()

    # -- export and import (roost.admin.archive; see StorageSnapshot) -------------

    def snapshot(self) -> StorageSnapshot:
        """A consistent, read-only view of the committed state, for export."""
        raise NotImplementedError(f"{type(self).__name__} cannot be exported")

    def adopt_id_scheme(self, scheme: IdScheme, given: bytes | None) -> None:
        """Key this (new, empty, not started) storage's IDs as ``scheme`` says, so
        that imported objects keep their IDs; ``given`` is ``ROOST_ID_SECRET``."""
        raise NotImplementedError(f"{type(self).__name__} cannot be imported into")

    async def import_objects(self, objects: Sequence[ExportedObject]) -> None:
        """Write KV-only objects (entries and alarm) in one group of batches.

        Goes through :meth:`open_object` and :meth:`ObjectStore.commit` like the
        runtime's own writes, so every engine can take an import.  Each object's
        batch replaces whatever it held.
        """
        loop = self.loop
        futures: list[CommitFuture] = []
        for obj in objects:
            batch = WriteBatch(clear=True, writes=dict(obj.entries))
            if obj.alarm_ms is not None:
                batch.set_alarm(obj.alarm_ms)
            done = CommitFuture(loop=loop)
            self.open_object(obj.namespace, obj.object_id, name=obj.name).commit(batch, done)
            futures.append(done)
        for done in futures:
            await done

    async def import_database(
        self,
        namespace: str,
        object_id: str,
        source: Path,
        alarm_ms: int | None,
        name: str | None = None,
    ) -> None:
        """Make the SQLite database ``source`` (a copy :meth:`StorageSnapshot.copy_database`
        wrote, moved away by this call) the database of a SQL object that holds
        nothing yet; ``alarm_ms`` is the alarm it holds, for the alarm index, and
        ``name`` the name its ID was made from, for the catalogue."""
        raise NotImplementedError(f"{type(self).__name__} cannot be imported into")

    @abstractmethod
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open files and start background work on ``loop``."""

    @property
    @abstractmethod
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the engine runs on (raises when not started)."""

    def seal_soon(self, seal: Callable[[], None]) -> None:
        """Run ``seal`` right before the next group commit (see :class:`CommitQueue`)."""
        queue = self._queue
        if self._closed or queue is None:
            self.loop.call_soon(seal)  # its commit fails: the engine is closed
        else:
            queue.seal_soon(seal)

    @abstractmethod
    async def close(self) -> None:
        """Finish every queued commit, then release all resources."""

    @abstractmethod
    def open_object(
        self, namespace: str, object_id: str, *, sql: bool = False, name: str | None = None
    ) -> ObjectStore:
        """The store of one object (cheap: no I/O for an object never written).

        ``sql=True`` gives the store of an object of a SQL class: a database of
        its own, reached through :attr:`ObjectStore.database`.  ``name`` is the
        name the ID was made from, when the caller knows it (``ObjectId.name``):
        the catalogue records it with the object's next write.
        """

    @abstractmethod
    def list_object_ids(self, namespace: str) -> list[str]:
        """IDs (hex) of the objects of ``namespace`` that have stored data."""

    # -- the alarm index (read by the scheduler) ---------------------------------

    @abstractmethod
    def due_alarms(
        self, now_ms: int, limit: int, *, after: AlarmEntry | None = None
    ) -> list[AlarmEntry]:
        """Index rows due at ``now_ms`` or earlier, at most ``limit``, in the
        order ``(due_ms, namespace, object_id)``; with ``after``, only the rows
        that come after that one in this order (to read on from a page)."""

    @abstractmethod
    def alarm_entry(self, namespace: str, object_id: str) -> AlarmEntry | None:
        """The index row of one object, if it has one."""

    @abstractmethod
    def next_alarm_after(self, now_ms: int) -> int | None:
        """The earliest due time later than ``now_ms`` in the index, if any."""

    @abstractmethod
    def update_alarm(
        self, entry: AlarmEntry, *, due_ms: int | None, retry_count: int
    ) -> asyncio.Future[bool]:
        """Reschedule (or, with ``due_ms=None``, remove) an index row, only if its
        ``gen`` is still ``entry.gen``; the future tells whether it was changed.

        For a KV-only object's row only the scheduling changes (``due_ms``,
        ``retry_count``); its alarm stays what the object last wrote.
        """

    @abstractmethod
    async def peek_alarm(self, namespace: str, object_id: str) -> int | None:
        """The committed alarm of a SQL object that is not live, read from its database.

        The engine may keep the database open for the activation that usually
        follows (the alarm is due); :meth:`release_peeked` closes it if no
        activation took it.
        """

    def release_peeked(self, namespace: str, object_id: str) -> None:
        """Close what :meth:`peek_alarm` kept open, unless an activation took it."""
        return None

    def alarm_committed(self, future: CommitFuture, batch: WriteBatch) -> None:
        """Tell :attr:`alarm_listener` when ``future`` succeeds, if ``batch`` set an alarm."""
        due = batch.alarm_ms
        if not batch.alarm_changed or due is None or self.alarm_listener is None:
            return
        listener = self.alarm_listener

        def done(f: asyncio.Future[None]) -> None:
            if not f.cancelled() and f.exception() is None:
                listener(due)

        future.add_done_callback(done)

    def check_fault(self, store: ObjectStore, batch: WriteBatch) -> None:
        hook = self.fault_hook
        if hook is not None:
            hook(store, batch)

    # == The object catalogue: listing and inspection (roost.admin) ===============
    # One entry per object that holds data (:mod:`.catalogue`), kept by the
    # engine inside the commits of the object's own batches.  These methods are
    # what roost.admin reads, so that any engine (a cluster's included) can be
    # listed and inspected the same way.

    @abstractmethod
    def catalogue_page(
        self,
        namespace: str,
        *,
        prefix: str | None = None,
        after_id: str | None = None,
        after_name: str | None = None,
        limit: int = 100,
    ) -> list[CatalogueEntry]:
        """At most ``limit`` entries of ``namespace``, read by keyset.

        Without ``prefix``: in ID order, those after ``after_id``.  With
        ``prefix``: the objects whose recorded name starts with it, in
        ``(name, ID)`` order, those after ``(after_name, after_id)``.  Reads
        only the rows it returns (an index range), however many objects exist.
        """

    @abstractmethod
    def catalogue_entry(self, namespace: str, object_id: str) -> CatalogueEntry | None:
        """The entry of one object, if the catalogue has it."""

    @abstractmethod
    def object_usage(self, namespace: str, object_id: str, *, sql: bool) -> ObjectUsage:
        """Count what one object stores now (its keys and their bytes).

        Never opens a SQL object's database (a live instance may hold it): its
        ``keys`` are ``None`` unless it has no database at all."""

    @abstractmethod
    def sql_tables(self, namespace: str, object_id: str) -> list[tuple[str, int]] | None:
        """The user tables of a SQL object that is not live, with their row
        counts, in name order; ``None`` when it has no database."""

    @abstractmethod
    async def delete_object(
        self, namespace: str, object_id: str, *, refuse: Callable[[], str | None] | None = None
    ) -> bool:
        """Delete everything one object stores (keys, alarm, database, entry);
        whether there was anything.

        The object must not be live.  ``refuse`` is called at the moment of
        the deletion, when no event runs (a runtime checks there that the
        object is still not live): a reason it returns is raised as
        :class:`roost.InvalidState` and nothing is deleted.
        """
