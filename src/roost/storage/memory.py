"""The in-memory engine: ephemeral storage for tests and ``data_dir=None``.

It behaves like the SQLite engine in everything but durability: commits are
pipelined (a batch is sealed and becomes "durable" on the next turn of the
event loop, after the object has moved on), batches of one object apply in
order, and a failed batch breaks its store.  SQL objects get a SQLite
``:memory:`` database each, kept for the engine's life; the alarm index is a
heap ordered by due time.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import sqlite3
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import CommitFailed, InvalidState, RuntimeClosed
from .catalogue import (
    CatalogueEntry,
    ObjectUsage,
    prefix_bound,
    storable_name,
    table_counts,
)
from .engine import (
    AlarmEntry,
    CommitFuture,
    CommitQueue,
    ListQuery,
    ObjectStore,
    Outcome,
    StorageEngine,
    WriteBatch,
    broken_error,
    resolve_outcomes,
)
from .objectdb import ObjectDatabase, configure_connection
from .sqllimits import SqlLimits
from .sqlobject import SqlObjectStore

__all__ = ["MemoryEngine"]

_Key = tuple[str, str]
_Item = tuple["_MemoryObjectStore", WriteBatch, CommitFuture]


@dataclass(slots=True)
class _Entry:
    """A catalogue entry as the memory engine keeps it."""

    name: str | None
    created_ms: int
    written_ms: int
    sql: bool


@dataclass(slots=True)
class _AlarmRow:
    due_ms: int
    alarm_ms: int | None
    retry_count: int
    gen: int
    sql: bool


class _MemoryObjectStore(ObjectStore):
    __slots__ = ("_engine", "_key", "name")

    def __init__(self, engine: MemoryEngine, key: _Key, name: str | None = None) -> None:
        super().__init__(*key)
        self._engine = engine
        self._key = key
        self.name = storable_name(name)

    def _data(self) -> dict[str, bytes]:
        return self._engine.data.get(self._key, {})

    def read(self, keys: list[str]) -> dict[str, bytes]:
        data = self._data()
        return {k: data[k] for k in keys if k in data}

    def read_range(self, query: ListQuery) -> list[tuple[str, bytes]]:
        data = self._data()
        keys = sorted(data)
        lo = 0
        if query.low is not None:
            find = bisect.bisect_right if query.low_open else bisect.bisect_left
            lo = find(keys, query.low)
        hi = len(keys) if query.high is None else bisect.bisect_left(keys, query.high)
        chosen = keys[lo:hi]
        if query.reverse:
            chosen.reverse()
        if query.limit is not None:
            chosen = chosen[: query.limit]
        return [(k, data[k]) for k in chosen]

    def read_alarm(self) -> int | None:
        row = self._engine.alarms.get(self._key)
        return None if row is None or row.sql else row.alarm_ms

    def seal_soon(self, seal: Callable[[], None]) -> None:
        self._engine.seal_soon(seal)

    def commit(self, batch: WriteBatch, done: CommitFuture) -> None:
        self._engine.enqueue(self, batch, done)

    def apply(self, batch: WriteBatch) -> None:
        data = self._engine.data
        current = {} if batch.clear else dict(data.get(self._key, {}))
        for key, value in batch.writes.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value
        if current:
            data[self._key] = current
        else:
            data.pop(self._key, None)
        engine = self._engine
        if (
            batch.clear
            and not current
            and (batch.alarm_ms is None if batch.alarm_changed else self._key not in engine.alarms)
        ):
            engine.forget_entry(self._key)  # as the SQLite engine: emptied by delete_all
        elif (batch.alarm_changed and batch.alarm_ms is not None) or any(
            value is not None for value in batch.writes.values()
        ):
            engine.record(self._key, self.name, sql=False)  # only batches that put something
        if batch.alarm_changed:
            engine = self._engine
            if batch.alarm_ms is None:
                engine.alarms.pop(self._key, None)
            else:
                row = engine.alarms.get(self._key)
                gen = 1 if row is None else row.gen + 1
                engine.set_alarm_row(
                    self._key, _AlarmRow(batch.alarm_ms, batch.alarm_ms, 0, gen, False)
                )


class _MemorySqlStore(SqlObjectStore):
    """A SQL object's store that also carries its name for the catalogue."""

    def __init__(self, engine: MemoryEngine, key: _Key, name: str | None) -> None:
        super().__init__(engine, *key)
        self.name = storable_name(name)


class MemoryEngine(StorageEngine):
    """Keeps every object's committed state in memory; nothing survives the process."""

    def __init__(self, *, sql_limits: SqlLimits | None = None) -> None:
        super().__init__()
        #: Bounds on SQL objects' queries and databases.
        self.sql_limits = sql_limits or SqlLimits()
        self.data: dict[_Key, dict[str, bytes]] = {}
        self.alarms: dict[_Key, _AlarmRow] = {}
        self.databases: dict[_Key, ObjectDatabase] = {}
        # (due_ms, key, gen), in the scheduler's order: stale entries (gen or
        # due changed) are skipped.
        self._heap: list[tuple[int, _Key, int]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: CommitQueue[_Item] | None = None
        self.commits = 0
        #: The catalogue, and each namespace's IDs and (name, ID) pairs in order.
        self.catalogue: dict[_Key, _Entry] = {}
        self._ids: dict[str, list[str]] = {}
        self._names: dict[str, list[tuple[str, str]]] = {}
        self._sql_stores: weakref.WeakValueDictionary[_Key, _MemorySqlStore] = (
            weakref.WeakValueDictionary()
        )

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue = CommitQueue(loop, self._flush)
        self._closed = False

    async def close(self) -> None:
        self._flush()
        self._closed = True

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeClosed("storage engine is not running")
        return self._loop

    def open_object(
        self, namespace: str, object_id: str, *, sql: bool = False, name: str | None = None
    ) -> ObjectStore:
        if sql:
            store = _MemorySqlStore(self, (namespace, object_id), name)
            self._sql_stores[(namespace, object_id)] = store
            return store
        return _MemoryObjectStore(self, (namespace, object_id), name)

    def list_object_ids(self, namespace: str) -> list[str]:
        keys = set(self.data) | set(self.databases)
        keys.update(k for k, row in self.alarms.items() if not row.sql)
        return sorted(oid for ns, oid in keys if ns == namespace)

    # -- KV commits ------------------------------------------------------------------

    def enqueue(self, store: _MemoryObjectStore, batch: WriteBatch, done: CommitFuture) -> None:
        if self._closed or self._queue is None:
            raise RuntimeClosed("storage engine is closed")
        self._queue.put((store, batch, done))
        self.alarm_committed(done, batch)

    def _flush(self) -> None:
        if self._queue is None:
            return
        group = self._queue.take()
        if group:
            self.commits += 1
            self.batches_committed += len(group)
        outcomes: list[Outcome] = []
        for store, batch, future in group:
            error: BaseException | None = None
            if store.broken is not None:
                error = broken_error(store)
            else:
                try:
                    self.check_fault(store, batch)
                    store.apply(batch)
                except Exception as exc:
                    error = CommitFailed(f"commit failed: {exc}")
                    error.__cause__ = exc
                    store.broken = error
            outcomes.append((future, None, error))
        resolve_outcomes(outcomes)

    # -- SQL objects (the SqlHost protocol) ----------------------------------------

    def open_database(
        self, namespace: str, object_id: str, *, create: bool
    ) -> ObjectDatabase | None:
        key = (namespace, object_id)
        db = self.databases.get(key)
        if db is None and create:
            conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            configure_connection(conn, on_disk=False)
            db = self.databases[key] = ObjectDatabase(conn, limits=self.sql_limits)
        return db

    def release_database(self, namespace: str, object_id: str, db: ObjectDatabase) -> None:
        pass  # the connection *is* the object's database: keep it

    def after_commit(
        self, namespace: str, object_id: str, db: ObjectDatabase
    ) -> asyncio.Future[None] | None:
        key = (namespace, object_id)
        store = self._sql_stores.get(key)
        self.record(key, None if store is None else store.name, sql=True)
        return None

    # -- the catalogue ---------------------------------------------------------------

    def record(self, key: _Key, name: str | None, *, sql: bool) -> None:
        """Enter a write of the object ``key`` in the catalogue."""
        now_ms = int(time.time() * 1000)
        entry = self.catalogue.get(key)
        if entry is None:
            self.catalogue[key] = _Entry(name, now_ms, now_ms, sql)
            bisect.insort(self._ids.setdefault(key[0], []), key[1])
            if name is not None:
                bisect.insort(self._names.setdefault(key[0], []), (name, key[1]))
            return
        entry.written_ms = now_ms
        if entry.name is None and name is not None:
            entry.name = name
            bisect.insort(self._names.setdefault(key[0], []), (name, key[1]))

    def forget_entry(self, key: _Key) -> None:
        entry = self.catalogue.pop(key, None)
        if entry is None:
            return
        ids = self._ids[key[0]]
        del ids[bisect.bisect_left(ids, key[1])]
        if entry.name is not None:
            names = self._names[key[0]]
            del names[bisect.bisect_left(names, (entry.name, key[1]))]

    def _entry_of(self, key: _Key) -> CatalogueEntry:
        e = self.catalogue[key]
        return CatalogueEntry(key[0], key[1], e.name, e.created_ms, e.written_ms, e.sql)

    def catalogue_page(
        self,
        namespace: str,
        *,
        prefix: str | None = None,
        after_id: str | None = None,
        after_name: str | None = None,
        limit: int = 100,
    ) -> list[CatalogueEntry]:
        if prefix is None:
            ids = self._ids.get(namespace, [])
            start = 0 if after_id is None else bisect.bisect_right(ids, after_id)
            chosen = ids[start : start + limit]
        else:
            names = self._names.get(namespace, [])
            low = (
                (prefix, "")
                if after_name is None
                else max((prefix, ""), (after_name, after_id or ""))
            )
            start = (
                bisect.bisect_right(names, low)
                if after_name is not None
                else bisect.bisect_left(names, low)
            )
            bound = prefix_bound(prefix)
            chosen = [i for n, i in names[start : start + limit] if bound is None or n < bound]
        return [self._entry_of((namespace, i)) for i in chosen]

    def catalogue_entry(self, namespace: str, object_id: str) -> CatalogueEntry | None:
        key = (namespace, object_id)
        return self._entry_of(key) if key in self.catalogue else None

    def object_usage(self, namespace: str, object_id: str, *, sql: bool) -> ObjectUsage:
        key = (namespace, object_id)
        if sql:
            db = self.databases.get(key)
            return ObjectUsage(0, 0) if db is None else ObjectUsage(None, db.size)
        data = self.data.get(key, {})
        return ObjectUsage(len(data), sum(len(k.encode()) + len(v) for k, v in data.items()))

    def sql_tables(self, namespace: str, object_id: str) -> list[tuple[str, int]] | None:
        db = self.databases.get((namespace, object_id))
        return None if db is None else table_counts(db)

    async def delete_object(
        self, namespace: str, object_id: str, *, refuse: Callable[[], str | None] | None = None
    ) -> bool:
        await asyncio.sleep(0)  # as the SQLite engine: the deletion is a commit of its own
        reason = refuse() if refuse is not None else None
        if reason is not None:
            raise InvalidState(reason)
        key = (namespace, object_id)
        found = key in self.catalogue or key in self.data or key in self.alarms
        self.data.pop(key, None)
        self.alarms.pop(key, None)
        db = self.databases.pop(key, None)
        if db is not None:
            found = True
            db.close()
        self.forget_entry(key)
        return found

    def lower_alarm_index(
        self, namespace: str, object_id: str, due_ms: int
    ) -> asyncio.Future[None] | None:
        key = (namespace, object_id)
        row = self.alarms.get(key)
        if row is None:
            self.set_alarm_row(key, _AlarmRow(due_ms, None, 0, 1, True))
        else:
            self.set_alarm_row(key, _AlarmRow(min(row.due_ms, due_ms), None, 0, row.gen + 1, True))
        return None

    # -- the alarm index ---------------------------------------------------------------

    def set_alarm_row(self, key: _Key, row: _AlarmRow) -> None:
        self.alarms[key] = row
        heapq.heappush(self._heap, (row.due_ms, key, row.gen))

    def _valid(self, item: tuple[int, _Key, int]) -> bool:
        due, key, gen = item
        row = self.alarms.get(key)
        return row is not None and row.gen == gen and row.due_ms == due

    def _take_while(
        self, keep: int, pred_due_ok: int, after: tuple[int, _Key] | None = None
    ) -> tuple[list[tuple[int, _Key, int]], list[tuple[int, _Key, int]]]:
        # Pop valid entries due at or before `pred_due_ok`: at most `keep` of
        # those past `after`, and those not past it.  The caller pushes both
        # back.  Stale entries are dropped for good.
        taken: list[tuple[int, _Key, int]] = []
        passed: list[tuple[int, _Key, int]] = []
        heap = self._heap
        while heap and len(taken) < keep and heap[0][0] <= pred_due_ok:
            item = heapq.heappop(heap)
            if self._valid(item):
                if after is None or item[:2] > after:
                    taken.append(item)
                else:
                    passed.append(item)
        return taken, passed

    def due_alarms(
        self, now_ms: int, limit: int, *, after: AlarmEntry | None = None
    ) -> list[AlarmEntry]:
        floor = None if after is None else (after.due_ms, (after.namespace, after.object_id))
        taken, passed = self._take_while(limit, now_ms, floor)
        for item in taken + passed:
            heapq.heappush(self._heap, item)
        return [self._entry(key, self.alarms[key]) for _, key, _ in taken]

    def alarm_entry(self, namespace: str, object_id: str) -> AlarmEntry | None:
        key = (namespace, object_id)
        row = self.alarms.get(key)
        return None if row is None else self._entry(key, row)

    @staticmethod
    def _entry(key: _Key, row: _AlarmRow) -> AlarmEntry:
        return AlarmEntry(*key, row.due_ms, row.retry_count, row.gen, row.sql)

    def next_alarm_after(self, now_ms: int) -> int | None:
        taken, _ = self._take_while(len(self._heap), now_ms)
        heap = self._heap
        while heap and not self._valid(heap[0]):
            heapq.heappop(heap)
        found = heap[0][0] if heap else None
        for item in taken:
            heapq.heappush(heap, item)
        return found

    def update_alarm(
        self, entry: AlarmEntry, *, due_ms: int | None, retry_count: int
    ) -> asyncio.Future[bool]:
        future: asyncio.Future[bool] = self.loop.create_future()
        key = (entry.namespace, entry.object_id)
        row = self.alarms.get(key)
        changed = row is not None and row.gen == entry.gen
        if changed and row is not None:
            if due_ms is None:
                del self.alarms[key]
            else:
                self.set_alarm_row(
                    key, _AlarmRow(due_ms, row.alarm_ms, retry_count, row.gen + 1, row.sql)
                )
        future.set_result(changed)
        return future

    async def peek_alarm(self, namespace: str, object_id: str) -> int | None:
        db = self.databases.get((namespace, object_id))
        return None if db is None else db.read_alarm()
