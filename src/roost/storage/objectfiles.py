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
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import sqlite3
import threading
from pathlib import Path
from typing import Final

from ..errors import StorageError
from .engine import Durability
from .objectdb import ObjectDatabase, configure_connection
from .syncer import WalSyncer

__all__ = ["ObjectFiles"]

_PLAIN_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,100}")
#: A WAL larger than this is checkpointed after the commit that grew it.
CHECKPOINT_BYTES: Final = 4 * 1024 * 1024


class ObjectFiles:
    """The SQL objects' databases of one engine (see the module docstring)."""

    def __init__(self, root: Path, *, durability: Durability) -> None:
        self.root = root
        self.durability = durability
        self._syncer: WalSyncer | None = None
        self._closer = concurrent.futures.ThreadPoolExecutor(1, "roost-sql-close")
        self._closing: dict[str, concurrent.futures.Future[None]] = {}
        self._closing_lock = threading.Lock()
        # Databases of live objects, closed by close() if still open then.
        self._open: dict[str, ObjectDatabase] = {}

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.durability == "full" and self._syncer is None:
            self._syncer = WalSyncer(loop)

    def close(self) -> None:
        """Close every database, wait for every sync; stop the threads (call from a thread)."""
        for db in list(self._open.values()):
            self._close(db)
        self._open.clear()
        self._closer.shutdown(wait=True)
        if self._syncer is not None:
            self._syncer.close()

    # -- paths -------------------------------------------------------------------

    def namespace_dir(self, namespace: str) -> Path:
        name = namespace if _PLAIN_NAME.fullmatch(namespace) else "x-" + namespace.encode().hex()
        return self.root / name

    def path(self, namespace: str, object_id: str) -> Path:
        return (
            self.namespace_dir(namespace) / object_id[:2] / object_id[2:4] / f"{object_id}.sqlite3"
        )

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
        path = self.path(namespace, object_id)
        key = str(path)
        self._wait_closed(key)
        exists = path.exists()
        if not create and not exists:
            return None
        try:
            if not exists:
                path.parent.mkdir(parents=True, exist_ok=True)
            # No other connection should ever hold the file: fail fast if one does
            # (say, a second server on the same data directory).
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=1.0)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open the database of object {object_id}: {exc}") from exc
        try:
            configure_connection(conn, on_disk=True, new=not exists)
            db = ObjectDatabase(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise StorageError(f"cannot open the database of object {object_id}: {exc}") from exc
        self._open[key] = db
        return db

    def _close(self, db: ObjectDatabase) -> None:
        if self.durability == "full":
            # Closing checkpoints the WAL into the database and removes it:
            # that checkpoint must be synced.
            with db.trusted() as conn:
                conn.execute("PRAGMA synchronous=FULL")
        db.close()

    def release(self, namespace: str, object_id: str, db: ObjectDatabase) -> None:
        key = str(self.path(namespace, object_id))
        if self._open.get(key) is db:
            del self._open[key]
        closing = self._closer.submit(self._close, db)
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
        wal = f"{self.path(namespace, object_id)}-wal"
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

    def peek_alarm(self, namespace: str, object_id: str) -> int | None:
        db = self.open(namespace, object_id, create=False)
        if db is None:
            return None
        try:
            return db.read_alarm()
        finally:
            del self._open[str(self.path(namespace, object_id))]
            self._close(db)
