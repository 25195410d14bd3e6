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
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import CommitFailed, RuntimeClosed
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
class _AlarmRow:
    due_ms: int
    alarm_ms: int | None
    retry_count: int
    gen: int
    sql: bool


class _MemoryObjectStore(ObjectStore):
    __slots__ = ("_engine", "_key")

    def __init__(self, engine: MemoryEngine, key: _Key) -> None:
        super().__init__(*key)
        self._engine = engine
        self._key = key

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

    def open_object(self, namespace: str, object_id: str, *, sql: bool = False) -> ObjectStore:
        if sql:
            return SqlObjectStore(self, namespace, object_id)
        return _MemoryObjectStore(self, (namespace, object_id))

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
        return None

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
