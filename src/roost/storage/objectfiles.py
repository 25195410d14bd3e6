"""Where SQL objects' databases live on disk, and how they are opened and closed.

Layout::

    <data_dir>/objects/<namespace>/<id[0:2]>/<id[2:4]>/<id>.sqlite3

Two levels of 256 directories keep a million objects at about 15 files per
directory.  A namespace whose name is not a plain file name (letters, digits,
``_ . -``) is stored as ``x-<hex of its UTF-8>``.

A file is created on the first write (reads of an object that has no file
answer "empty" without creating one).  While the object is live its one
connection holds the file in exclusive locking mode.  Closing (on eviction or
reset) checkpoints the WAL into the database and removes it; that happens in a
background thread, and opening the same object again waits for it.

The alarm scheduler looks at an evicted object's alarm before waking it
(:meth:`ObjectFiles.peek`).  Opening a file costs about a millisecond of system
calls, so that happens in a thread, and the connection is kept for the
activation that usually follows: :meth:`ObjectFiles.open` takes it (waiting
for it if it is still opening), so the file is opened once per delivery, never
on the event loop, and by one connection at a time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import os
import re
import resource
import sqlite3
import threading
from pathlib import Path
from typing import Final

from ..errors import StorageError
from .engine import Durability
from .filesync import FileSyncPool
from .objectdb import ObjectDatabase, configure_connection
from .sqllimits import SqlLimits

__all__ = ["ObjectFiles"]

_PLAIN_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,100}")
#: A WAL larger than this is checkpointed after the commit that grew it.
CHECKPOINT_BYTES: Final = 4 * 1024 * 1024
#: Threads that open files for peek(): opening is mostly waiting on system calls.
_OPENERS: Final = 2
#: What peek() opened (None: the object has no file) and the alarm it read.
_Peeked = tuple[ObjectDatabase | None, int | None]


class ObjectFiles:
    """The SQL objects' databases of one engine (see the module docstring)."""

    def __init__(
        self, root: Path, *, durability: Durability, limits: SqlLimits | None = None
    ) -> None:
        self.root = root
        self.durability = durability
        self.limits = limits or SqlLimits()
        self._syncer: FileSyncPool | None = None
        self._closer = concurrent.futures.ThreadPoolExecutor(1, "roost-sql-close")
        self._opener = concurrent.futures.ThreadPoolExecutor(_OPENERS, "roost-sql-open")
        self._closing: dict[str, concurrent.futures.Future[None]] = {}
        self._closing_lock = threading.Lock()
        # Databases of live objects, closed by close() if still open then.
        self._open: dict[str, ObjectDatabase] = {}
        # Databases opened by peek() and not yet taken by open() (loop thread only).
        self._peeked: dict[str, concurrent.futures.Future[_Peeked]] = {}
        self._dirs: dict[str, str] = {}

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.durability == "full" and self._syncer is None:
            self._syncer = FileSyncPool(loop)

    def close(self) -> None:
        """Close every database, wait for every sync; stop the threads (call from a thread)."""
        self._opener.shutdown(wait=True)
        for db in list(self._open.values()):
            self._close(db)
        self._open.clear()
        for peeked in self._peeked.values():
            left = peeked.result()[0] if peeked.exception() is None else None
            if left is not None:
                self._close(left)
        self._peeked.clear()
        self._closer.shutdown(wait=True)
        if self._syncer is not None:
            self._syncer.close()

    # -- paths -------------------------------------------------------------------

    def namespace_dir(self, namespace: str) -> Path:
        name = namespace if _PLAIN_NAME.fullmatch(namespace) else "x-" + namespace.encode().hex()
        return self.root / name

    def path(self, namespace: str, object_id: str) -> Path:
        return Path(self._file(namespace, object_id))

    def _file(self, namespace: str, object_id: str) -> str:
        # Plain strings: this runs several times per SQL commit and alarm
        # delivery, where building Path objects showed in profiles.
        base = self._dirs.get(namespace)
        if base is None:
            base = self._dirs[namespace] = str(self.namespace_dir(namespace))
        return f"{base}/{object_id[:2]}/{object_id[2:4]}/{object_id}.sqlite3"

    def list_ids(self, namespace: str) -> list[str]:
        base = self.namespace_dir(namespace)
        if not base.is_dir():
            return []
        return sorted(p.name[: -len(".sqlite3")] for p in base.glob("*/*/*.sqlite3"))

    # -- connections -----------------------------------------------------------------

    def _wait_closed(self, key: str) -> None:
        with self._closing_lock:
            closing = self._closing.get(key)
        if closing is not None:
            closing.result()

    def open(self, namespace: str, object_id: str, *, create: bool) -> ObjectDatabase | None:
        key = self._file(namespace, object_id)
        peeked = self._peeked.pop(key, None)
        if peeked is not None:
            try:
                db = peeked.result()[0]  # waits only while the peek is still opening it
            except StorageError:
                db = None
            if db is not None:
                self._open[key] = db
                return db
        self._wait_closed(key)
        db = self._connect(key, object_id, create=create)
        if db is not None:
            self._open[key] = db
        return db

    def _connect(self, path: str, object_id: str, *, create: bool) -> ObjectDatabase | None:
        exists = os.path.exists(path)
        if not create and not exists:
            return None
        try:
            if not exists:
                os.makedirs(os.path.dirname(path), exist_ok=True)
            # No other connection should ever hold the file: fail fast if one does
            # (say, a second server on the same data directory).
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=1.0)
        except (OSError, sqlite3.Error) as exc:
            raise _cannot_open(object_id, exc) from exc
        try:
            configure_connection(conn, on_disk=True, new=not exists)
            db = ObjectDatabase(conn, limits=self.limits, path=path)
        except sqlite3.Error as exc:
            conn.close()
            raise _cannot_open(object_id, exc) from exc
        return db

    def _close(self, db: ObjectDatabase) -> None:
        if self.durability == "full":
            # Closing checkpoints the WAL into the database and removes it:
            # that checkpoint must be synced.
            with db.trusted() as conn:
                conn.execute("PRAGMA synchronous=FULL")
        db.close()

    def release(self, namespace: str, object_id: str, db: ObjectDatabase) -> None:
        key = self._file(namespace, object_id)
        if self._open.get(key) is db:
            del self._open[key]
        self._track_closing(key, self._closer.submit(self._close, db))

    def _track_closing(self, key: str, closing: concurrent.futures.Future[None]) -> None:
        # A later open() of the same file waits for this close.
        with self._closing_lock:
            self._closing[key] = closing

        def forget(done: concurrent.futures.Future[None]) -> None:
            with self._closing_lock:
                if self._closing.get(key) is done:
                    del self._closing[key]

        closing.add_done_callback(forget)

    def after_commit(
        self, namespace: str, object_id: str, db: ObjectDatabase
    ) -> asyncio.Future[None] | None:
        wal = f"{self._file(namespace, object_id)}-wal"
        synced = self.durability == "full"
        try:
            grown = os.path.getsize(wal) > CHECKPOINT_BYTES
        except FileNotFoundError:
            grown = False
        if grown:
            db.checkpoint(synced=synced)
            return None  # a synced checkpoint made everything durable
        if self._syncer is None:
            return None  # durability="process": the OS has the commit
        return self._syncer.sync(wal)

    # -- peeking at an evicted object's alarm ------------------------------------------

    def peek(self, namespace: str, object_id: str) -> concurrent.futures.Future[int | None]:
        """Read the alarm of an object that is not live, opening its file in a thread.

        The connection is kept for :meth:`open` (the alarm is usually due, and
        the object activated next); :meth:`release_peeked` closes it otherwise.
        Call from the event loop's thread, at most once per object until then.
        """
        key = self._file(namespace, object_id)
        if key in self._peeked:
            raise RuntimeError(f"object {object_id} is already being peeked at")
        with self._closing_lock:
            # Wait for a close already under way, never for one asked for later
            # (release_peeked of this very peek would wait for us).
            closing = self._closing.get(key)

        def peek() -> _Peeked:
            if closing is not None:
                closing.result()
            db = self._connect(key, object_id, create=False)
            if db is None:
                return None, None
            try:
                return db, db.read_alarm()
            except sqlite3.Error as exc:
                self._close(db)
                raise StorageError(f"cannot read the alarm of object {object_id}: {exc}") from exc

        opened = self._peeked[key] = self._opener.submit(peek)
        alarm: concurrent.futures.Future[int | None] = concurrent.futures.Future()

        def done(future: concurrent.futures.Future[_Peeked]) -> None:
            error = future.exception()
            if error is not None:
                alarm.set_exception(error)
            else:
                alarm.set_result(future.result()[1])

        opened.add_done_callback(done)
        return alarm

    def release_peeked(self, namespace: str, object_id: str) -> None:
        """Close the connection :meth:`peek` kept, unless :meth:`open` took it."""
        key = self._file(namespace, object_id)
        peeked = self._peeked.pop(key, None)
        if peeked is None:
            return

        def close() -> None:
            try:
                db = peeked.result()[0]
            except StorageError:
                return
            if db is not None:
                self._close(db)

        self._track_closing(key, self._closer.submit(close))


def _cannot_open(object_id: str, exc: Exception) -> StorageError:
    """The error for a file SQLite could not open, naming the cause when it is
    the limit on open files (SQLite's own message does not say)."""
    reason = str(exc)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        # SQLite opens two or three files per database: count how close we are.
        used = len(os.listdir("/dev/fd"))
    except OSError as probe:
        used = soft if probe.errno in (errno.EMFILE, errno.ENFILE) else 0
    if used >= soft - 8:
        reason = (
            f"too many open files ({used} of the {soft} this process may open): raise "
            "the limit (ulimit -n) or lower the runtime's max_live_sql_objects"
        )
    return StorageError(f"cannot open the database of object {object_id}: {reason}")
