"""The store of a SQL object: batches that commit its own database.

How a batch commits (rules 3-5 of docs/consistency.md):

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
5. Batches settle in order.  Their syncs can finish out of order (a pool of
   threads), and a batch that wrote nothing needs none, so a batch whose
   predecessor is still unsettled waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from collections.abc import Callable
from typing import Protocol

from ..errors import CommitFailed, ObjectReset
from .engine import CommitFuture, ListQuery, ObjectStore, WriteBatch, broken_error
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

    def seal_soon(self, seal: Callable[[], None]) -> None:
        """Call ``seal`` on the next turn of the event loop (before the engine's commit)."""

    def check_fault(self, store: ObjectStore, batch: WriteBatch) -> None: ...

    def alarm_committed(self, future: CommitFuture, batch: WriteBatch) -> None: ...


#: A batch's future, and the future of the batch before it (to settle after it).
_Pending = tuple[CommitFuture, "CommitFuture | None"]


class SqlObjectStore(ObjectStore):
    """A SQL object's state in its own database (see the module docstring)."""

    sql_capable = True

    def __init__(self, host: SqlHost, namespace: str, object_id: str) -> None:
        super().__init__(namespace, object_id)
        self._host = host
        self._db: ObjectDatabase | None = None
        self._closed = False
        # Batches applied to the open transaction, not yet committed.
        self._waiting: list[_Pending] = []
        # The future of the last batch given to commit().
        self._last: CommitFuture | None = None
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

    def seal_soon(self, seal: Callable[[], None]) -> None:
        self._host.seal_soon(seal)

    def commit(self, batch: WriteBatch, done: CommitFuture) -> None:
        host = self._host
        before, self._last = self._last, done
        if self.broken is not None:
            host.loop.call_soon(self._settle, [(done, before)], broken_error(self))
            return
        try:
            db = self.database
            db.begin()
            host.check_fault(self, batch)
            db.apply(batch)
        except Exception as exc:
            self._fail(exc, [(done, before)])
            return
        db.unsealed = False
        self._waiting.append((done, before))
        host.alarm_committed(done, batch)
        if batch.alarm_changed:
            self._alarm_pending = batch.alarm_ms
            if batch.alarm_ms is not None:
                lowered = host.lower_alarm_index(self.namespace, self.object_id, batch.alarm_ms)
                if lowered is not None:
                    self._blocked += 1
                    lowered.add_done_callback(self._lowered)
        if not self._blocked:
            self._flush()

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
        self, batches: list[_Pending], alarm: int | None, error: BaseException | None
    ) -> None:
        if error is not None:
            self._fail(error, batches)
            return
        if self.broken is None:
            self._alarm_durable = alarm
        self._settle(batches, None)

    def _settle(self, batches: list[_Pending], error: BaseException | None) -> None:
        """Settle ``batches`` (in order), each once the batch before it has settled."""
        for i, (done, before) in enumerate(batches):
            if before is not None and not before.done():
                before.add_done_callback(functools.partial(self._retry_settle, batches[i:], error))
                return
            if done.done():
                continue
            failure = error if error is not None else _failure_of(before)
            if failure is None:
                done.set_result(None)
            else:
                done.set_exception(failure)

    def _retry_settle(
        self, batches: list[_Pending], error: BaseException | None, _: object
    ) -> None:
        self._settle(batches, error)

    def _fail(self, cause: BaseException, more: list[_Pending] | None = None) -> None:
        """Break the store: roll back, fail every batch not yet durable.

        The batches fail on the next turn, like any commit: never inside the
        seal or callback that called us, since the failure resets the object.
        """
        if self.broken is None:
            if isinstance(cause, CommitFailed):
                self.broken = cause
            else:
                self.broken = CommitFailed(f"commit failed: {cause}")
                self.broken.__cause__ = cause
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.rollback()
        batches, self._waiting = [*self._waiting, *(more or ())], []
        self._host.loop.call_soon(self._settle, batches, self.broken)

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


def _failure_of(before: CommitFuture | None) -> BaseException | None:
    return None if before is None else before.exception()
