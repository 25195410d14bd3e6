"""The store of a SQL object: batches that commit its own database.

How a batch commits (DESIGN §4 rules 3-5):

1. User SQL runs at once on the object's connection, inside the transaction of
   the current batch (:meth:`ObjectDatabase.begin`), so it reads its own writes.
2. When the batch is sealed (the next turn of the event loop), :meth:`commit`
   writes its KV and alarm changes into the same transaction and ``COMMIT`` s
   it on the event loop.  With ``synchronous=OFF`` that only hands the WAL
   frames to the OS; the host then ``fsync`` s the WAL in a thread (for
   ``durability="full"``), and the batch's future resolves after that.  The
   object meanwhile opens the next transaction and goes on working: commits
   are pipelined, and the output gate holds results until their future.
3. A batch that *sets* an alarm first lowers the object's row of the
   process-wide alarm index (a write to the shared database) and only
   ``COMMIT`` s once that is durable, so a durable alarm always has an index
   row no later than it.  Batches sealed meanwhile join the same ``COMMIT``.
4. Any failure rolls the open transaction back, fails every batch not yet
   durable, and breaks the store: the runtime resets the object, and neither
   the SQL nor the KV writes of those batches remain.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from typing import Protocol

from ..errors import CommitFailed, ObjectReset
from .engine import ListQuery, ObjectStore, WriteBatch, broken_error
from .objectdb import ObjectDatabase

__all__ = ["SqlHost", "SqlObjectStore"]


class SqlHost(Protocol):
    """What a SQL object's store needs from its engine."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the engine runs on."""

    def open_database(
        self, namespace: str, object_id: str, *, create: bool
    ) -> ObjectDatabase | None:
        """The object's database; ``None`` if it has none and ``create`` is false."""

    def release_database(self, namespace: str, object_id: str, db: ObjectDatabase) -> None:
        """The store is done with ``db`` (no transaction is open)."""

    def after_commit(
        self, namespace: str, object_id: str, db: ObjectDatabase
    ) -> asyncio.Future[None] | None:
        """Make the last ``COMMIT`` durable; ``None`` when it already is."""

    def lower_alarm_index(
        self, namespace: str, object_id: str, due_ms: int
    ) -> asyncio.Future[None] | None:
        """Make the index row of the object due no later than ``due_ms``
        (``None`` when that is already durable)."""

    def check_fault(self, store: ObjectStore, batch: WriteBatch) -> None: ...

    def alarm_committed(self, future: asyncio.Future[None], batch: WriteBatch) -> None: ...


class SqlObjectStore(ObjectStore):
    """A SQL object's state in its own database (see the module docstring)."""

    sql_capable = True

    def __init__(self, host: SqlHost, namespace: str, object_id: str) -> None:
        super().__init__(namespace, object_id)
        self._host = host
        self._db: ObjectDatabase | None = None
        self._closed = False
        # Futures of batches applied to the open transaction, not yet committed.
        self._waiting: list[asyncio.Future[None]] = []
        # Index writes the next COMMIT must wait for.
        self._blocked = 0
        # The alarm as of the open transaction, and as of the last durable commit.
        self._alarm_pending: int | None = None
        self._alarm_durable: int | None = None
        self._alarm_known = False

    # -- the database ------------------------------------------------------------

    def _open(self, *, create: bool) -> ObjectDatabase | None:
        if self._closed:
            raise ObjectReset("this object's storage is closed")
        if self._db is None:
            db = self._host.open_database(self.namespace, self.object_id, create=create)
            if db is None:
                return None
            self._db = db
            if not self._alarm_known:
                self._alarm_pending = self._alarm_durable = db.read_alarm()
                self._alarm_known = True
        return self._db

    @property
    def database(self) -> ObjectDatabase:
        if self.broken is not None:
            raise ObjectReset(f"this object's storage failed: {self.broken}")
        db = self._open(create=True)
        assert db is not None
        return db

    # -- reads -------------------------------------------------------------------

    def read(self, keys: list[str]) -> dict[str, bytes]:
        db = self._open(create=False)
        return {} if db is None else db.read(keys)

    def read_range(self, query: ListQuery) -> list[tuple[str, bytes]]:
        db = self._open(create=False)
        return [] if db is None else db.read_range(query)

    def read_alarm(self) -> int | None:
        self._open(create=False)
        return self._alarm_pending

    def durable_alarm(self) -> int | None:
        self._open(create=False)
        return self._alarm_durable

    # -- commits -------------------------------------------------------------------

    def commit(self, batch: WriteBatch) -> asyncio.Future[None]:
        host = self._host
        future = host.loop.create_future()
        if self.broken is not None:
            # Fail on the next turn, like any commit: the store's owner sees the
            # failure (and resets the object) before the caller's output does.
            host.loop.call_soon(_set_failed, future, broken_error(self))
            return future
        try:
            db = self.database
            db.begin()
            host.check_fault(self, batch)
            db.apply(batch)
        except Exception as exc:
            self._fail(exc)
            host.loop.call_soon(_set_failed, future, self.broken)
            return future
        db.unsealed = False
        self._waiting.append(future)
        host.alarm_committed(future, batch)
        if batch.alarm_changed:
            self._alarm_pending = batch.alarm_ms
            if batch.alarm_ms is not None:
                lowered = host.lower_alarm_index(self.namespace, self.object_id, batch.alarm_ms)
                if lowered is not None:
                    self._blocked += 1
                    lowered.add_done_callback(self._lowered)
        if not self._blocked:
            self._flush()
        return future

    def _lowered(self, lowered: asyncio.Future[None]) -> None:
        self._blocked -= 1
        error = lowered.exception() if not lowered.cancelled() else CommitFailed("cancelled")
        if error is not None:
            self._fail(error)
            return
        db = self._db
        # With SQL writes of a batch not yet sealed in the transaction, the
        # COMMIT waits for that batch's seal (scheduled already) to include it.
        if not self._blocked and self._waiting and db is not None and not db.unsealed:
            self._flush()

    def _flush(self) -> None:
        db = self._db
        if self.broken is not None or db is None:
            return
        try:
            wrote = db.commit()
        except sqlite3.Error as exc:
            self._fail(exc)
            return
        futures, self._waiting = self._waiting, []
        alarm = self._alarm_pending
        durable = None
        if wrote:
            try:
                durable = self._host.after_commit(self.namespace, self.object_id, db)
            except (OSError, sqlite3.Error) as exc:
                self._fail(exc, futures)
                return
        if durable is None:
            self._settled(futures, alarm, None)
        else:
            durable.add_done_callback(
                lambda f: self._settled(futures, alarm, None if f.cancelled() else f.exception())
            )

    def _settled(
        self, futures: list[asyncio.Future[None]], alarm: int | None, error: BaseException | None
    ) -> None:
        if error is not None:
            self._fail(error, futures)
            return
        if self.broken is None:
            self._alarm_durable = alarm
        for future in futures:
            if not future.done():
                future.set_result(None)

    def _fail(self, cause: BaseException, more: list[asyncio.Future[None]] | None = None) -> None:
        """Break the store: roll back, fail every batch not yet durable."""
        if self.broken is None:
            if isinstance(cause, CommitFailed):
                self.broken = cause
            else:
                self.broken = CommitFailed(f"commit failed: {cause}")
                self.broken.__cause__ = cause
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.rollback()
        futures, self._waiting = [*self._waiting, *(more or ())], []
        for future in futures:
            if not future.done():
                future.set_exception(self.broken)

    def close(self) -> None:
        if self._closed:
            return
        if self._waiting:
            self._fail(ObjectReset("the object was reset before its writes were committed"))
        self._closed = True
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.rollback()
            self._host.release_database(self.namespace, self.object_id, db)


def _set_failed(future: asyncio.Future[None], error: BaseException | None) -> None:
    if not future.done():
        future.set_exception(error or CommitFailed("commit failed"))
