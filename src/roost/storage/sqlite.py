"""The embedded engine: every KV object of a process in one SQLite database.

Layout (measured in ``docs/storage.md``): one WAL-mode database file,
``<data_dir>/objects.sqlite3``, with a ``WITHOUT ROWID`` table keyed by
``(namespace, object, key)``.  An object that stores one small value costs one
row, no file, no schema and no fsync of its own, so the millionth object costs
what the first did.

Writes go through one writer thread that performs *group commit*: it takes every
batch that is ready (from any object), applies them in one transaction and
commits once, so one fsync covers them all.  Reads run on the event loop's
thread on a separate read-only connection; in WAL mode they never wait for the
writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from pathlib import Path
from typing import Any, Final

from ..errors import CommitFailed, RuntimeClosed, StorageError
from .engine import Durability, ListQuery, ObjectStore, StorageEngine, WriteBatch

__all__ = ["SqliteEngine"]

_SCHEMA_VERSION: Final = 1
_DB_NAME: Final = "objects.sqlite3"
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS roost_meta (key TEXT PRIMARY KEY, value ANY) STRICT;
CREATE TABLE IF NOT EXISTS kv (
    ns TEXT NOT NULL,
    object BLOB NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (ns, object, key)
) WITHOUT ROWID;
"""
_STOP: Final = object()

_Item = tuple["_SqliteObjectStore", WriteBatch, "asyncio.Future[None]"]


class _SqliteObjectStore(ObjectStore):
    __slots__ = ("_engine", "_ns", "_object")

    def __init__(self, engine: SqliteEngine, namespace: str, object_id: str) -> None:
        super().__init__()
        self._engine = engine
        self._ns = namespace
        self._object = bytes.fromhex(object_id)

    def read(self, keys: list[str]) -> dict[str, bytes]:
        conn = self._engine.reader()
        if len(keys) == 1:
            row = conn.execute(
                "SELECT value FROM kv WHERE ns=? AND object=? AND key=?",
                (self._ns, self._object, keys[0]),
            ).fetchone()
            return {} if row is None else {keys[0]: row[0]}
        found: dict[str, bytes] = {}
        # SQLite's default limit on host parameters is 32766; stay well below it.
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT key, value FROM kv WHERE ns=? AND object=? AND key IN ({marks})",
                (self._ns, self._object, *chunk),
            )
            found.update(rows)
        return found

    def read_range(self, query: ListQuery) -> list[tuple[str, bytes]]:
        sql = ["SELECT key, value FROM kv WHERE ns=? AND object=?"]
        params: list[Any] = [self._ns, self._object]
        if query.low is not None:
            sql.append("AND key > ?" if query.low_open else "AND key >= ?")
            params.append(query.low)
        if query.high is not None:
            sql.append("AND key < ?")
            params.append(query.high)
        sql.append("ORDER BY key DESC" if query.reverse else "ORDER BY key")
        if query.limit is not None:
            sql.append("LIMIT ?")
            params.append(query.limit)
        return list(self._engine.reader().execute(" ".join(sql), params))

    def commit(self, batch: WriteBatch) -> asyncio.Future[None]:
        return self._engine.enqueue(self, batch)

    def apply(self, conn: sqlite3.Connection, batch: WriteBatch) -> None:
        ns, obj = self._ns, self._object
        if batch.clear:
            conn.execute("DELETE FROM kv WHERE ns=? AND object=?", (ns, obj))
        puts = [(ns, obj, k, v) for k, v in batch.writes.items() if v is not None]
        deletes = [(ns, obj, k) for k, v in batch.writes.items() if v is None]
        if deletes:
            conn.executemany("DELETE FROM kv WHERE ns=? AND object=? AND key=?", deletes)
        if len(puts) == 1:
            conn.execute("INSERT OR REPLACE INTO kv VALUES (?,?,?,?)", puts[0])
        elif puts:
            conn.executemany("INSERT OR REPLACE INTO kv VALUES (?,?,?,?)", puts)


def _apply_all(
    conn: sqlite3.Connection, batches: list[tuple[_SqliteObjectStore, WriteBatch]]
) -> None:
    """Apply ``batches`` in order with as few statements as possible.

    Only the last write of each key counts, so a group of many objects' batches
    becomes one ``executemany`` of deletes and one of upserts (the per-row
    Python work of a statement each was most of the writer thread's time).
    """
    final: dict[tuple[str, bytes, str], bytes | None] = {}

    def flush() -> None:
        deletes = [key for key, value in final.items() if value is None]
        puts = [(*key, value) for key, value in final.items() if value is not None]
        if deletes:
            conn.executemany("DELETE FROM kv WHERE ns=? AND object=? AND key=?", deletes)
        if puts:
            conn.executemany("INSERT OR REPLACE INTO kv VALUES (?,?,?,?)", puts)
        final.clear()

    for store, batch in batches:
        ns, obj = store._ns, store._object
        if batch.clear:
            flush()  # earlier writes first: the clear must remove them
            conn.execute("DELETE FROM kv WHERE ns=? AND object=?", (ns, obj))
        for key, value in batch.writes.items():
            final[(ns, obj, key)] = value
    flush()


class SqliteEngine(StorageEngine):
    """All KV objects of a process in one SQLite file, with group commit.

    Parameters
    ----------
    data_dir:
        Directory for the database; created when missing.
    durability:
        ``"full"`` (default) fsyncs every commit before its outputs are released
        (``synchronous=FULL``): acknowledged writes survive ``kill -9`` and power
        loss.  ``"process"`` (``synchronous=NORMAL``) survives ``kill -9`` of the
        server but may lose the last commits on power loss or an OS crash.
    """

    def __init__(self, data_dir: str | Path, *, durability: Durability = "full") -> None:
        super().__init__()
        if durability not in ("full", "process"):
            raise ValueError(f"durability must be 'full' or 'process', not {durability!r}")
        self.path = Path(data_dir) / _DB_NAME
        self.durability = durability
        self._queue: queue.SimpleQueue[_Item | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.commits = 0
        self.batches_committed = 0

    # -- lifecycle -------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._thread is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            writer = self._connect()
            self._prepare(writer)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open storage at {self.path}: {exc}") from exc
        self._loop = loop
        self._reader = self._connect()
        self._reader.execute("PRAGMA query_only=1")
        self._thread = threading.Thread(
            target=self._writer_main, args=(writer,), name="roost-sqlite-writer", daemon=True
        )
        self._thread.start()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(self._thread.join)
            # Let the settle callbacks the writer scheduled run before we return.
            await asyncio.sleep(0)
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if self.durability == 'full' else 'NORMAL'}")
        conn.execute("PRAGMA cache_size=-65536")
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.executescript(_SCHEMA)
        row = conn.execute("SELECT value FROM roost_meta WHERE key='schema_version'").fetchone()
        if row is None:
            conn.execute("INSERT INTO roost_meta VALUES ('schema_version', ?)", (_SCHEMA_VERSION,))
        elif row[0] != _SCHEMA_VERSION:
            raise StorageError(
                f"{self.path} has storage schema version {row[0]}; this Roost reads "
                f"version {_SCHEMA_VERSION}"
            )

    # -- reads -----------------------------------------------------------------

    def reader(self) -> sqlite3.Connection:
        if self._reader is None:
            raise RuntimeClosed("storage engine is not running")
        return self._reader

    def open_object(self, namespace: str, object_id: str) -> ObjectStore:
        return _SqliteObjectStore(self, namespace, object_id)

    def list_object_ids(self, namespace: str) -> list[str]:
        rows = self.reader().execute(
            "SELECT DISTINCT object FROM kv WHERE ns=? ORDER BY object", (namespace,)
        )
        return [bytes(r[0]).hex() for r in rows]

    # -- writes ----------------------------------------------------------------

    def enqueue(self, store: _SqliteObjectStore, batch: WriteBatch) -> asyncio.Future[None]:
        if self._closed or self._loop is None:
            raise RuntimeClosed("storage engine is closed")
        future = self._loop.create_future()
        self._queue.put((store, batch, future))
        return future

    def _writer_main(self, conn: sqlite3.Connection) -> None:
        try:
            stopping = False
            while not stopping:
                first = self._queue.get()
                if first is _STOP:
                    break
                group: list[_Item] = [first]  # type: ignore[list-item]
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stopping = True
                        break
                    group.append(item)  # type: ignore[arg-type]
                self._settle(self._commit_group(conn, group))
        finally:
            conn.close()

    def _commit_group(
        self, conn: sqlite3.Connection, group: list[_Item]
    ) -> list[tuple[asyncio.Future[None], BaseException | None]]:
        live = [item for item in group if item[0].broken is None]
        try:
            conn.execute("BEGIN IMMEDIATE")
            for store, batch, _ in live:
                self.check_fault(store, batch)
            _apply_all(conn, [(store, batch) for store, batch, _ in live])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            # Someone's batch is bad: commit one by one so only it (and the later
            # batches of its object) fail.
            return [
                (future, self._commit_one(conn, store, batch)) for store, batch, future in group
            ]
        self.commits += 1
        self.batches_committed += len(live)
        outcomes: list[tuple[asyncio.Future[None], BaseException | None]] = []
        for store, _, future in group:
            outcomes.append((future, None if store.broken is None else _broken(store)))
        return outcomes

    def _commit_one(
        self, conn: sqlite3.Connection, store: _SqliteObjectStore, batch: WriteBatch
    ) -> BaseException | None:
        if store.broken is not None:
            return _broken(store)
        try:
            conn.execute("BEGIN IMMEDIATE")
            self.check_fault(store, batch)
            store.apply(conn, batch)
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            failure = CommitFailed(f"commit failed: {exc}")
            failure.__cause__ = exc
            store.broken = failure
            return failure
        self.commits += 1
        self.batches_committed += 1
        return None

    def _settle(self, outcomes: list[tuple[asyncio.Future[None], BaseException | None]]) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(_resolve, outcomes)


def _broken(store: ObjectStore) -> BaseException:
    return CommitFailed(f"an earlier commit of this object failed: {store.broken}")


def _resolve(outcomes: list[tuple[asyncio.Future[None], BaseException | None]]) -> None:
    for future, error in outcomes:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
