"""The in-memory engine: ephemeral storage for tests and ``data_dir=None``.

It behaves like the SQLite engine in everything but durability: commits are
pipelined (a batch becomes "durable" on the next turn of the event loop, after
the object has moved on), batches of one object apply in order, and a failed
batch breaks its store.
"""

from __future__ import annotations

import asyncio
import bisect

from ..errors import CommitFailed, RuntimeClosed
from .engine import ListQuery, ObjectStore, StorageEngine, WriteBatch

__all__ = ["MemoryEngine"]


class _MemoryObjectStore(ObjectStore):
    __slots__ = ("_engine", "_key")

    def __init__(self, engine: MemoryEngine, key: tuple[str, str]) -> None:
        super().__init__()
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

    def commit(self, batch: WriteBatch) -> asyncio.Future[None]:
        return self._engine.enqueue(self, batch)

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


class MemoryEngine(StorageEngine):
    """Keeps every object's committed state in a dict; nothing survives the process."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[tuple[str, str], dict[str, bytes]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[tuple[_MemoryObjectStore, WriteBatch, asyncio.Future[None]]] = []
        self._closed = False
        self.commits = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._closed = False

    async def close(self) -> None:
        self._flush()
        self._closed = True

    def open_object(self, namespace: str, object_id: str) -> ObjectStore:
        return _MemoryObjectStore(self, (namespace, object_id))

    def list_object_ids(self, namespace: str) -> list[str]:
        return sorted(oid for ns, oid in self.data if ns == namespace)

    def enqueue(self, store: _MemoryObjectStore, batch: WriteBatch) -> asyncio.Future[None]:
        if self._closed or self._loop is None:
            raise RuntimeClosed("storage engine is closed")
        future = self._loop.create_future()
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append((store, batch, future))
        return future

    def _flush(self) -> None:
        group, self._pending = self._pending, []
        if group:
            self.commits += 1
        for store, batch, future in group:
            error: BaseException | None = None
            if store.broken is not None:
                error = CommitFailed(f"an earlier commit of this object failed: {store.broken}")
            else:
                try:
                    self.check_fault(store, batch)
                    store.apply(batch)
                except Exception as exc:
                    error = CommitFailed(f"commit failed: {exc}")
                    error.__cause__ = exc
                    store.broken = error
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
