"""The embedded engine: every KV object of a process in one SQLite database.

Layout (measured in ``docs/storage.md``): one WAL-mode database file,
``<data_dir>/objects.sqlite3``, with a ``WITHOUT ROWID`` table keyed by
``(namespace, object, key)``.  An object that stores one small value costs one
row, no file, no schema and no fsync of its own, so the millionth object costs
what the first did.  A value longer than :data:`_INLINE_MAX` bytes lives in
``large_values`` (an ordinary rowid table) and its ``kv`` row holds that row's
integer id instead: a ``WITHOUT ROWID`` table keeps every column in its B-tree
keys, and SQLite compares a search key against a key that overflows its page
only after reading the whole record, overflow pages and all, so one large value
made every lookup or write that passed it in the tree read it.  The file is
reached through apsw, whose bundled SQLite is newer and cheaper per statement
than the system's (``docs/storage.md``); only apsw ever opens it, since two
SQLite libraries in one process would drop each other's POSIX locks on a shared
file.

Writes are *group-committed* on the event loop: once per turn of the loop the
engine seals every object's open batch (:class:`.engine.CommitQueue`), applies
them all in one transaction, one ``executemany`` per statement kind, and
commits with ``synchronous=OFF`` — which only hands the WAL frames to the
operating system (enough to survive ``kill -9``).  For ``durability="full"`` a
dedicated thread then ``fsync``s the WAL file, one ``fsync`` for every commit
made before it started, and only then are the batches' futures resolved, in
the order of the group (the output gate opens).  The thread does nothing but
wait on the disk, so it needs the interpreter lock twice per ``fsync``; running
the SQL itself in a thread made it fight the event loop for the lock at every
statement, which cost milliseconds per commit under load.

Checkpoints copy the WAL into the database file in a thread of their own,
through a connection with ``synchronous=FULL`` (the WAL is synced before and
the database after each checkpoint), so the WAL is never reused before what it
held is durable in the database (:mod:`.walsync`).  Reads run on the event loop's
thread through the writer's own connection, between commits: a second connection
would drop its whole page cache at its first read after every commit (SQLite's
rule for a WAL that another connection changed), and re-read the B-tree from the
file each time.

The same database holds the *alarm index*, ``alarms``, ordered by due time
(``alarms_due``): for a KV-only object its row is the alarm itself, written in
the object's batches; for a SQL object it is a lower bound of the alarm kept in
the object's own database (:mod:`.objectfiles`, :mod:`.sqlobject`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json as _json
import os
import sqlite3 as _sqlite3
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import apsw

from ..errors import CommitFailed, InvalidState, RuntimeClosed, StorageError
from . import datadir, idsecret
from .catalogue import (
    WRITTEN_RESOLUTION_MS,
    CatalogueEntry,
    ObjectUsage,
    prefix_bound,
    sql_namespaces,
    storable_name,
    table_counts,
)
from .engine import (
    AlarmEntry,
    CommitFuture,
    CommitQueue,
    Durability,
    ExportedObject,
    IdScheme,
    ListQuery,
    ObjectStore,
    StorageEngine,
    StorageSnapshot,
    WriteBatch,
    broken_error,
    check_durability,
)
from .engine import Outcome as _Outcome
from .objectdb import ObjectDatabase
from .objectfiles import ObjectFiles
from .sqllimits import SqlLimits
from .sqlobject import SqlObjectStore
from .walsync import CHECKPOINT_INTERVAL, WalSyncer

__all__ = ["SqliteEngine"]

#: 4: the object catalogue; 3: values over _INLINE_MAX bytes moved to
#: large_values; 2: alarms; 1: kv only.
_SCHEMA_VERSION: Final = 4
_DB_NAME: Final = datadir.SHARED_DATABASE
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS roost_meta (key TEXT PRIMARY KEY, value ANY) STRICT;
CREATE TABLE IF NOT EXISTS kv (
    ns TEXT NOT NULL,
    object BLOB NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (ns, object, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS large_values (id INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS alarms (
    ns TEXT NOT NULL,
    object BLOB NOT NULL,
    due_ms INTEGER NOT NULL,
    alarm_ms INTEGER,
    retry_count INTEGER NOT NULL DEFAULT 0,
    gen INTEGER NOT NULL DEFAULT 0,
    sql INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (ns, object)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS alarms_due ON alarms (due_ms);
CREATE TABLE IF NOT EXISTS objects (
    ns TEXT NOT NULL,
    object BLOB NOT NULL,
    name TEXT,
    created_ms INTEGER,
    written_ms INTEGER,
    sql INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (ns, object)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS objects_name ON objects (ns, name, object) WHERE name IS NOT NULL;
"""
#: Small pages: a group commit of writes spread over many objects dirties about
#: one page per write, and SQLite writes (and the fsync flushes) each dirty page
#: whole; 1 KiB pages made 10,000-object RPC increments 10 % faster than 4 KiB
#: (docs/storage.md).
_PAGE_SIZE: Final = 1024
#: The WAL file is cut back to this size after a checkpoint lets it restart.
_WAL_SIZE_LIMIT: Final = 64 * 1024 * 1024

#: Longer values go to ``large_values`` (see the module docstring).  A ``kv`` row
#: must fit the 230 bytes of payload a 1 KiB index page keeps in place: with the
#: 32-byte object ID, a namespace and a key of up to about 60 bytes between
#: them, and the record's header, a value of 128 bytes does.
_INLINE_MAX: Final = 128
#: A ``kv`` value as stored: the bytes themselves, or the id of its ``large_values`` row.
_VALUE: Final = (
    "CASE WHEN typeof(value) = 'integer'"
    " THEN (SELECT data FROM large_values WHERE id = kv.value) ELSE value END"
)
_ALARM_COLUMNS: Final = "ns, object, due_ms, retry_count, gen, sql"
# The catalogue (storage/catalogue.py): one upsert per object per group commit,
# and per live object at most once per WRITTEN_RESOLUTION_MS.
_CATALOGUE_UPSERT: Final = """
INSERT INTO objects (ns, object, name, created_ms, written_ms, sql) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (ns, object) DO UPDATE SET
    written_ms = excluded.written_ms, name = coalesce(objects.name, excluded.name)
"""
# After a delete_all: the entry goes once nothing of the object is left.
_CATALOGUE_DROP_EMPTY: Final = """
DELETE FROM objects WHERE ns = ?1 AND object = ?2
AND NOT EXISTS (SELECT 1 FROM kv WHERE ns = ?1 AND object = ?2)
AND NOT EXISTS (SELECT 1 FROM alarms WHERE ns = ?1 AND object = ?2)
"""
_CATALOGUE_COLUMNS: Final = "ns, object, name, created_ms, written_ms, sql"
_DUE: Final = f"""
SELECT {_ALARM_COLUMNS} FROM alarms WHERE due_ms <= ?
ORDER BY due_ms, ns, object LIMIT ?
"""
_DUE_AFTER: Final = f"""
SELECT {_ALARM_COLUMNS} FROM alarms WHERE due_ms <= ? AND (due_ms, ns, object) > (?, ?, ?)
ORDER BY due_ms, ns, object LIMIT ?
"""
# An upsert, not INSERT OR REPLACE: REPLACE deletes and re-inserts the row, and
# measured on 10,000 objects that cost twice the CPU per row of updating the
# value in place, and a WAL ten times the size (docs/storage.md).
_KV_UPSERT: Final = """
INSERT INTO kv VALUES (?, ?, ?, ?)
ON CONFLICT (ns, object, key) DO UPDATE SET value = excluded.value
"""
# The common write, a small value, updates in place only a row that does not
# point at a large value; the caller counts the rows it skipped by the changes.
_KV_UPSERT_SMALL: Final = f"""{_KV_UPSERT} WHERE typeof(kv.value) <> 'integer'"""
_DROP_LARGE: Final = """
DELETE FROM large_values WHERE id =
(SELECT value FROM kv WHERE ns = ? AND object = ? AND key = ? AND typeof(value) = 'integer')
"""
_DROP_ALL_LARGE: Final = """
DELETE FROM large_values WHERE id IN
(SELECT value FROM kv WHERE ns = ? AND object = ? AND typeof(value) = 'integer')
"""
# A KV object's alarm: the row is the alarm; any write restarts its retries.
_ALARM_UPSERT: Final = """
INSERT INTO alarms (ns, object, due_ms, alarm_ms, retry_count, gen, sql)
VALUES (?, ?, ?, ?, 0, 1, 0)
ON CONFLICT (ns, object) DO UPDATE SET
    due_ms = excluded.due_ms, alarm_ms = excluded.alarm_ms, retry_count = 0, gen = gen + 1
"""
# A SQL object's index row: only ever lowered here (see docs/alarms.md).
_INDEX_LOWER: Final = """
INSERT INTO alarms (ns, object, due_ms, alarm_ms, retry_count, gen, sql)
VALUES (?, ?, ?, NULL, 0, 1, 1)
ON CONFLICT (ns, object) DO UPDATE SET
    due_ms = min(due_ms, excluded.due_ms), retry_count = 0, gen = gen + 1
"""

#: An engine write run inside the next group transaction, in order; returns a result.
_Op = Callable[[apsw.Connection], Any]
_Item = tuple["_SqliteObjectStore | None", "WriteBatch | _Op", "asyncio.Future[Any]"]


class _SqliteObjectStore(ObjectStore):
    __slots__ = ("_engine", "_ns", "_object", "name", "recorded_ms")

    def __init__(
        self, engine: SqliteEngine, namespace: str, object_id: str, name: str | None = None
    ) -> None:
        super().__init__(namespace, object_id)
        self._engine = engine
        self._ns = namespace
        self._object = bytes.fromhex(object_id)
        #: The object's name for the catalogue, and when its entry was last
        #: written by this store (0: not yet).
        self.name = storable_name(name)
        self.recorded_ms = 0

    def read_alarm(self) -> int | None:
        try:
            row = (
                self._engine._connection()
                .execute(
                    "SELECT alarm_ms FROM alarms WHERE ns=? AND object=? AND sql=0",
                    (self._ns, self._object),
                )
                .fetchone()
            )
        except apsw.Error as exc:
            raise read_failed(self._engine.path, exc) from exc
        return None if row is None else int(row[0])

    def read(self, keys: list[str]) -> dict[str, bytes]:
        conn = self._engine._connection()
        try:
            if len(keys) == 1:
                row = conn.execute(
                    f"SELECT {_VALUE} FROM kv WHERE ns=? AND object=? AND key=?",
                    (self._ns, self._object, keys[0]),
                ).fetchone()
                return {} if row is None else {keys[0]: row[0]}
            found: dict[str, bytes] = {}
            # SQLite's default limit on host parameters is 32766; stay well below it.
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT key, {_VALUE} FROM kv WHERE ns=? AND object=? AND key IN ({marks})",
                    (self._ns, self._object, *chunk),
                )
                found.update(rows)
        except apsw.Error as exc:
            raise read_failed(self._engine.path, exc) from exc
        return found

    def read_range(self, query: ListQuery) -> list[tuple[str, bytes]]:
        tail, params = query.sql_tail()
        try:
            return list(
                self._engine._connection().execute(
                    f"SELECT key, {_VALUE} FROM kv WHERE ns=? AND object=? {tail}",
                    (self._ns, self._object, *params),
                )
            )
        except apsw.Error as exc:
            raise read_failed(self._engine.path, exc) from exc

    def seal_soon(self, seal: Callable[[], None]) -> None:
        self._engine.seal_soon(seal)

    def commit(self, batch: WriteBatch, done: CommitFuture) -> None:
        self._engine.enqueue(self, batch, done)


class _SqliteSqlStore(SqlObjectStore):
    """A SQL object's store that also carries what the catalogue records."""

    def __init__(
        self, engine: SqliteEngine, namespace: str, object_id: str, name: str | None
    ) -> None:
        super().__init__(engine, namespace, object_id)
        self.name = storable_name(name)
        self.recorded_ms = 0


def _stores(batch: WriteBatch) -> bool:
    """Whether ``batch`` puts something (a value or an alarm): only such a batch
    makes or touches a catalogue entry, so deletes on an object that holds
    nothing do not enter it."""
    if batch.alarm_changed and batch.alarm_ms is not None:
        return True
    return any(value is not None for value in batch.writes.values())


def _apply_all(
    conn: apsw.Connection,
    batches: list[tuple[_SqliteObjectStore, WriteBatch]],
    large_ids: Iterator[int],
    now_ms: int,
    recorded: list[_SqliteObjectStore],
) -> None:
    """Apply ``batches`` in order with as few statements as possible.

    Only the last write of each key counts, so a group of many objects' batches
    becomes one ``executemany`` of deletes and one of upserts (the per-row
    Python work of a statement each was most of a group commit's time).  Values
    over :data:`_INLINE_MAX` bytes get a ``large_values`` row with an id from
    ``large_ids``; a key's previous large value, if it had one, is deleted.

    The catalogue entry of each object whose store has not recorded one in
    the last :data:`WRITTEN_RESOLUTION_MS` is upserted (one row per object);
    those stores are added to ``recorded``, for the caller to mark once the
    transaction has committed.
    """
    final: dict[tuple[str, bytes, str], bytes | None] = {}
    alarms: dict[tuple[str, bytes], int | None] = {}
    entries: dict[tuple[str, bytes], tuple[str, bytes, str | None, int, int, int]] = {}
    cleared: list[tuple[str, bytes]] = []

    def flush() -> None:
        deletes: list[tuple[str, bytes, str]] = []
        small: list[tuple[str, bytes, str, bytes]] = []
        large: list[tuple[int, bytes]] = []
        large_rows: list[tuple[str, bytes, str, int]] = []
        for key, value in final.items():
            if value is None:
                deletes.append(key)
            elif len(value) <= _INLINE_MAX:
                small.append((*key, value))
            else:
                large_id = next(large_ids)
                large.append((large_id, value))
                large_rows.append((*key, large_id))
        final.clear()
        if deletes:
            conn.executemany(_DROP_LARGE, deletes)
            conn.executemany("DELETE FROM kv WHERE ns=? AND object=? AND key=?", deletes)
        if large:
            conn.executemany(_DROP_LARGE, [row[:3] for row in large_rows])
            conn.executemany("INSERT INTO large_values VALUES (?, ?)", large)
            conn.executemany(_KV_UPSERT, large_rows)
        if small:
            before = conn.total_changes()
            conn.executemany(_KV_UPSERT_SMALL, small)
            if conn.total_changes() - before != len(small):
                # Some of these keys held a large value (rare): drop it, then write.
                conn.executemany(_DROP_LARGE, [row[:3] for row in small])
                conn.executemany(_KV_UPSERT, small)

    for store, batch in batches:
        ns, obj = store._ns, store._object
        if batch.clear:
            flush()  # earlier writes first: the clear must remove them
            conn.execute(_DROP_ALL_LARGE, (ns, obj))
            conn.execute("DELETE FROM kv WHERE ns=? AND object=?", (ns, obj))
            cleared.append((ns, obj))
            store.recorded_ms = 0  # the entry may go: the next write restores it
        for key, value in batch.writes.items():
            final[(ns, obj, key)] = value
        if batch.alarm_changed:
            alarms[(ns, obj)] = batch.alarm_ms
        if now_ms - store.recorded_ms >= WRITTEN_RESOLUTION_MS and _stores(batch):
            entries[(ns, obj)] = (ns, obj, store.name, now_ms, now_ms, 0)
            recorded.append(store)
    flush()
    gone = [key for key, due in alarms.items() if due is None]
    if gone:
        conn.executemany("DELETE FROM alarms WHERE ns=? AND object=?", gone)
    for (ns, obj), due in alarms.items():
        if due is not None:
            conn.execute(_ALARM_UPSERT, (ns, obj, due, due))
    if entries:
        conn.executemany(_CATALOGUE_UPSERT, entries.values())
    if cleared:
        conn.executemany(_CATALOGUE_DROP_EMPTY, cleared)
        # Their entries may be gone: the next write of each must write it again.
        gone_entries = set(cleared)
        recorded[:] = [s for s in recorded if (s._ns, s._object) not in gone_entries]


class SqliteEngine(StorageEngine):
    """All KV objects of a process in one SQLite file, with group commit.

    Parameters
    ----------
    data_dir:
        Directory for the database; created when missing.
    durability:
        ``"full"`` (default) fsyncs every commit before its outputs are released
        (the WAL is ``fsync``ed before outputs leave): acknowledged writes survive
        ``kill -9`` and power loss.  ``"process"`` (no ``fsync``) survives ``kill -9`` of the
        server but may lose the last commits on power loss or an OS crash.
    checkpoint_interval:
        Seconds between checkpoints of the WAL into the database file while
        writes continue; each one lets the WAL start over, so under steady load
        it holds about this many seconds of commits (:mod:`.walsync`).
    sql_limits:
        Bounds on SQL objects' queries and databases (:class:`.SqlLimits`).
    read_only:
        Open the shared database for reading only, without the data
        directory's lock, so that a running server's storage can be listed
        and inspected (``roost objects``).  Nothing can be written, no SQL
        object's database is opened (a live one is its server's alone), and the
        directory must already hold a database.  Safe beside a server because
        the database is in WAL mode: a reader sees the last committed state and
        never blocks the writer, and the server's checkpoints are passive (they
        copy what no reader still needs and never wait for one).
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        durability: Durability = "full",
        checkpoint_interval: float = CHECKPOINT_INTERVAL,
        sql_limits: SqlLimits | None = None,
        read_only: bool = False,
    ) -> None:
        super().__init__()
        check_durability(durability)
        self.read_only = read_only
        # Live SQL objects' stores, by (namespace, ID): what the catalogue
        # records of them (their name) at their commits (after_commit).
        self._sql_stores: weakref.WeakValueDictionary[tuple[str, str], _SqliteSqlStore] = (
            weakref.WeakValueDictionary()
        )
        if not checkpoint_interval > 0:
            raise ValueError(f"checkpoint_interval must be positive, not {checkpoint_interval!r}")
        self.path = Path(data_dir) / _DB_NAME
        self.durability = durability
        self.files = ObjectFiles(
            Path(data_dir) / "objects", durability=durability, limits=sql_limits
        )
        self._queue: CommitQueue[_Item] | None = None
        self._lock_fd: int | None = None
        self._writer: apsw.Connection | None = None
        self._syncer: WalSyncer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.commits = 0
        self.batches_committed = 0
        self.checkpoint_interval = checkpoint_interval
        # While the checkpoint thread's quiet pass runs, commits wait (walsync).
        self._held = False
        # Ids for new large_values rows; the writer is this process's alone (LOCK).
        self._large_ids: Iterator[int] = itertools.count(1)

    # -- lifecycle -------------------------------------------------------------

    def id_secret(self, given: bytes | None) -> bytes:
        directory = self.path.parent
        try:
            return idsecret.resolve(directory, given, has_data=datadir.holds_data(directory))
        except OSError as exc:
            raise StorageError(f"cannot keep the ID secret in {directory}: {exc}") from exc

    # -- export and import (roost.admin.archive; see SqliteSnapshot) ---------------

    def snapshot(self) -> StorageSnapshot:
        return SqliteSnapshot(self.path.parent)

    def adopt_id_scheme(self, scheme: IdScheme, given: bytes | None) -> None:
        directory = self.path.parent
        if self._writer is not None or datadir.holds_data(directory):
            raise StorageError(
                f"{directory} already holds data: only a new data directory takes the "
                "ID secret of an archive"
            )
        _adopt_ids(directory, scheme, given)

    async def import_database(
        self,
        namespace: str,
        object_id: str,
        source: Path,
        alarm_ms: int | None,
        name: str | None = None,
    ) -> None:
        _place_database(self.files.path(namespace, object_id), source, object_id)
        now_ms = int(time.time() * 1000)
        row = (namespace, bytes.fromhex(object_id), name, now_ms, now_ms, 1)
        await self.enqueue_op(lambda conn: conn.execute(_CATALOGUE_UPSERT, row))
        if alarm_ms is not None:
            await self.lower_alarm_index(namespace, object_id, alarm_ms)  # type: ignore[misc]

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._writer is not None:
            return
        if self.read_only:
            self._start_read_only(loop)
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = _lock_data_dir(self.path.parent)
            # Before SQLite may create a database in place of a lost one.
            state = datadir.inspect(self.path.parent)
            writer = self._connect()
            self._prepare(writer)
            if not state.marked:
                self._mark(writer, new=state.new)
            # Our own checkpoints (see the module docstring); a WAL that a
            # checkpoint let restart is cut back instead of staying at its peak.
            writer.execute("PRAGMA wal_autocheckpoint=0")
            writer.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
            writer.execute("PRAGMA synchronous=OFF")
            checkpointer = self._connect()
            checkpointer.execute("PRAGMA synchronous=FULL")
            syncer = WalSyncer(
                loop,
                self.path,
                checkpointer,
                fsync=self.durability == "full",
                hold_commits=self._hold_commits,
                checkpoint_interval=self.checkpoint_interval,
                on_synced=self._synced,
            )
        except (OSError, apsw.Error, StorageError) as exc:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            if isinstance(exc, StorageError):
                raise
            raise StorageError(f"cannot open storage at {self.path}: {exc}") from exc
        self._loop = loop
        self._queue = CommitQueue(loop, self._flush)
        self._writer = writer
        self._syncer = syncer
        self.files.start(loop)

    def _start_read_only(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self.path.is_file():
            raise StorageError(f"{self.path.parent} holds no Roost database ({self.path.name})")
        try:
            conn = apsw.Connection(str(self.path), flags=apsw.SQLITE_OPEN_READONLY)
            conn.set_busy_timeout(5_000)
            conn.execute("PRAGMA query_only=ON")
            version = conn.execute(
                "SELECT value FROM roost_meta WHERE key='schema_version'"
            ).fetchone()
        except apsw.Error as exc:
            raise StorageError(f"cannot open {self.path} for reading: {exc}") from exc
        if version is None or version[0] != _SCHEMA_VERSION:
            conn.close()
            raise StorageError(
                f"{self.path} has storage schema version {version and version[0]}; reading it "
                f"while a server runs needs version {_SCHEMA_VERSION} (the server's Roost is "
                "another version)"
            )
        self._loop = loop
        self._writer = conn  # never written: commits are refused (_queue_item)
        self._closed = False

    async def close(self) -> None:
        if self.read_only:
            self._closed = True
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            return
        if self._closed:
            return
        if self._writer is not None:
            self._held = False  # a quiet pass in progress must not strand these
            self._flush()  # seals the batches still open: they commit too
        self._closed = True
        if self._writer is not None:
            assert self._syncer is not None
            await asyncio.to_thread(self._syncer.close)
            await asyncio.to_thread(self.files.close)
            # Let the settle callbacks the syncer scheduled run before we return.
            await asyncio.sleep(0)
            self._writer.close()
            self._writer = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the data directory's lock
            self._lock_fd = None

    def _connect(self) -> apsw.Connection:
        conn = apsw.Connection(str(self.path))
        conn.set_busy_timeout(30_000)
        # Only a new database takes it (before WAL mode writes the header).
        conn.execute(f"PRAGMA page_size={_PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode=WAL").fetchall()
        conn.execute("PRAGMA cache_size=-65536")
        return conn

    def _mark(self, conn: apsw.Connection, *, new: bool) -> None:
        """Write the data directory's marker (:mod:`.datadir`).

        A new database must be durable first: a marker that outlived it in a
        power cut would make the next start refuse an empty directory.
        """
        if new:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            for path in (self.path, Path(f"{self.path}-wal")):
                with contextlib.suppress(FileNotFoundError):
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            datadir.sync_directory(self.path.parent)
        datadir.write_marker(self.path.parent)

    def _prepare(self, conn: apsw.Connection) -> None:
        conn.execute(_SCHEMA)  # apsw runs every statement of the script
        row = conn.execute("SELECT value FROM roost_meta WHERE key='schema_version'").fetchone()
        if row is not None and row[0] not in (1, 2, 3, _SCHEMA_VERSION):
            raise StorageError(
                f"{self.path} has storage schema version {row[0]}; this Roost reads "
                f"version {_SCHEMA_VERSION}"
            )
        if row is None or row[0] != _SCHEMA_VERSION:
            # Version 1 had no alarms (the script added them); before version
            # 3 every value was stored in its kv row; before version 4 there
            # was no catalogue, so the objects already stored are entered now.
            conn.execute("BEGIN IMMEDIATE")
            try:
                if row is not None and row[0] < 3:
                    _move_large_values(conn)
                if row is not None:
                    _backfill_catalogue(conn, self.files)
                conn.execute(
                    "INSERT OR REPLACE INTO roost_meta VALUES ('schema_version', ?)",
                    (_SCHEMA_VERSION,),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        last = conn.execute("SELECT ifnull(max(id), 0) FROM large_values").get
        assert isinstance(last, int)
        self._large_ids = itertools.count(last + 1)

    # -- reads -----------------------------------------------------------------

    def _connection(self) -> apsw.Connection:
        """The one connection: commits use it, and so do reads, between commits."""
        if self._writer is None:
            raise RuntimeClosed("storage engine is not running")
        return self._writer

    def open_object(
        self, namespace: str, object_id: str, *, sql: bool = False, name: str | None = None
    ) -> ObjectStore:
        if sql:
            store = _SqliteSqlStore(self, namespace, object_id, name)
            self._sql_stores[(namespace, object_id)] = store
            return store
        return _SqliteObjectStore(self, namespace, object_id, name)

    def list_object_ids(self, namespace: str) -> list[str]:
        try:
            rows = self._connection().execute(
                "SELECT object FROM kv WHERE ns=? UNION "
                "SELECT object FROM alarms WHERE ns=? AND sql=0",
                (namespace, namespace),
            )
            found = {bytes(r[0]).hex() for r in rows}
        except apsw.Error as exc:
            raise read_failed(self.path, exc) from exc
        found.update(self.files.list_ids(namespace))
        return sorted(found)

    # -- the catalogue (storage/catalogue.py) -----------------------------------

    def catalogue_page(
        self,
        namespace: str,
        *,
        prefix: str | None = None,
        after_id: str | None = None,
        after_name: str | None = None,
        limit: int = 100,
    ) -> list[CatalogueEntry]:
        # Each form reads one range of an index (the primary key, or
        # objects_name for names) and stops after `limit` rows.
        sql = f"SELECT {_CATALOGUE_COLUMNS} FROM objects WHERE ns = ?"
        params: list[object] = [namespace]
        if prefix is None:
            if after_id is not None:
                sql += " AND object > ?"
                params.append(bytes.fromhex(after_id))
            sql += " ORDER BY object LIMIT ?"
        else:
            sql += " AND name IS NOT NULL AND name >= ?"
            params.append(prefix)
            bound = prefix_bound(prefix)
            if bound is not None:
                sql += " AND name < ?"
                params.append(bound)
            if after_name is not None:
                sql += " AND (name, object) > (?, ?)"
                params += [after_name, bytes.fromhex(after_id or "")]
            sql += " ORDER BY name, object LIMIT ?"
        params.append(limit)
        try:
            return [_catalogue_entry(row) for row in self._connection().execute(sql, params)]
        except apsw.Error as exc:
            raise read_failed(self.path, exc) from exc

    def catalogue_entry(self, namespace: str, object_id: str) -> CatalogueEntry | None:
        try:
            row = (
                self._connection()
                .execute(
                    f"SELECT {_CATALOGUE_COLUMNS} FROM objects WHERE ns = ? AND object = ?",
                    (namespace, bytes.fromhex(object_id)),
                )
                .fetchone()
            )
        except apsw.Error as exc:
            raise read_failed(self.path, exc) from exc
        return None if row is None else _catalogue_entry(row)

    def object_usage(self, namespace: str, object_id: str, *, sql: bool) -> ObjectUsage:
        if sql:
            path = self.files.path(namespace, object_id)
            size = 0
            for file in (path, Path(f"{path}-wal")):
                with contextlib.suppress(FileNotFoundError):
                    size += file.stat().st_size
            # Its keys are in its database, which a live instance holds: they are
            # not counted here (show_object counts what it reads).
            keys = 0 if not size else None
            return ObjectUsage(keys, size)
        try:
            # length() of a large value's blob reads its record header, not its bytes.
            row = (
                self._connection()
                .execute(
                    "SELECT count(*), ifnull(sum(length(CAST(key AS BLOB)) + CASE"
                    " WHEN typeof(value) = 'integer' THEN"
                    " (SELECT length(data) FROM large_values WHERE id = kv.value)"
                    " ELSE length(value) END), 0) FROM kv WHERE ns = ? AND object = ?",
                    (namespace, bytes.fromhex(object_id)),
                )
                .fetchone()
            )
        except apsw.Error as exc:
            raise read_failed(self.path, exc) from exc
        assert row is not None  # an aggregate always has its row
        count, size = row
        return ObjectUsage(int(count), int(size))

    def sql_tables(self, namespace: str, object_id: str) -> list[tuple[str, int]] | None:
        if self.read_only:
            raise StorageError(
                "a SQL object's database is read only with the data directory's lock "
                "(a running server holds its live objects' files)"
            )
        db = self.files.open(namespace, object_id, create=False)
        if db is None:
            return None
        try:
            return table_counts(db)
        finally:
            self.files.release(namespace, object_id, db)

    async def delete_object(
        self, namespace: str, object_id: str, *, refuse: Callable[[], str | None] | None = None
    ) -> bool:
        obj = bytes.fromhex(object_id)
        path = self.files.path(namespace, object_id)
        key = (namespace, obj)

        def delete(conn: apsw.Connection) -> bool | str:
            # Runs inside a group commit, when no event of any object runs:
            # ``refuse`` sees the same live objects as the deletion.
            reason = refuse() if refuse is not None else None
            if reason is not None:
                return reason
            before = conn.total_changes()
            conn.execute(_DROP_ALL_LARGE, key)
            for table in ("kv", "alarms", "objects"):
                conn.execute(f"DELETE FROM {table} WHERE ns = ? AND object = ?", key)
            found = conn.total_changes() > before
            for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                try:
                    file.unlink()
                    found = True
                except FileNotFoundError:
                    pass
            return found

        result = await self.enqueue_op(delete)
        if isinstance(result, str):
            raise InvalidState(result)
        return bool(result)

    # -- SQL objects (the SqlHost protocol) -------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeClosed("storage engine is not running")
        return self._loop

    def open_database(
        self, namespace: str, object_id: str, *, create: bool
    ) -> ObjectDatabase | None:
        if self.read_only:
            raise StorageError(
                "a SQL object's database is read only with the data directory's lock "
                "(a running server holds its live objects' files)"
            )
        path = self.files.path(namespace, object_id)
        try:
            size: int | None = path.stat().st_size
        except FileNotFoundError:
            size = None
        if not size:
            # SQLite would read a lost or truncated file as an empty database
            # (and create a missing one): refuse when the catalogue says the
            # object has written, so nothing begins again from empty.
            entry = self.catalogue_entry(namespace, object_id)
            if entry is not None and entry.sql:
                state = "is missing" if size is None else "is empty (0 bytes)"
                raise StorageError(
                    f"the database of SQL object {namespace} {object_id[:12]}…, {path}, "
                    f"{state}, but the data directory records that the object wrote to it: "
                    "its data was lost. Restore the data directory from a backup, or "
                    "delete the object on purpose (roost objects APP delete)"
                )
        return self.files.open(namespace, object_id, create=create)

    def release_database(self, namespace: str, object_id: str, db: ObjectDatabase) -> None:
        self.files.release(namespace, object_id, db)

    def after_commit(
        self, namespace: str, object_id: str, db: ObjectDatabase
    ) -> asyncio.Future[None] | None:
        self._record_sql_write(namespace, object_id)
        return self.files.after_commit(namespace, object_id, db)

    def _record_sql_write(self, namespace: str, object_id: str) -> None:
        """Enter a SQL object's write in the catalogue, in the next group commit.

        Its data is in a file of its own, so the entry cannot share its commit:
        it follows in the shared database's next one (within the same loop turn
        when the object commits at a seal), and the object's outputs do not wait
        for it.  A power cut between the two can leave a new object's first
        write without its entry; ``list_object_ids`` still finds its file.
        """
        store = self._sql_stores.get((namespace, object_id))
        now_ms = int(time.time() * 1000)
        if self._closed or (
            store is not None and now_ms - store.recorded_ms < WRITTEN_RESOLUTION_MS
        ):
            return
        name = None if store is None else store.name
        row = (namespace, bytes.fromhex(object_id), name, now_ms, now_ms, 1)

        def record(conn: apsw.Connection) -> None:
            conn.execute(_CATALOGUE_UPSERT, row)

        def recorded(future: asyncio.Future[Any]) -> None:
            if future.exception() is not None and store is not None:
                store.recorded_ms = 0  # not entered: the next commit tries again

        if store is not None:
            store.recorded_ms = now_ms  # no second entry while this one is queued
        self.enqueue_op(record).add_done_callback(recorded)

    def lower_alarm_index(
        self, namespace: str, object_id: str, due_ms: int
    ) -> asyncio.Future[None] | None:
        obj = bytes.fromhex(object_id)

        def lower(conn: apsw.Connection) -> None:
            conn.execute(_INDEX_LOWER, (namespace, obj, due_ms))

        return self.enqueue_op(lower)

    # -- the alarm index ---------------------------------------------------------

    def due_alarms(
        self, now_ms: int, limit: int, *, after: AlarmEntry | None = None
    ) -> list[AlarmEntry]:
        # Both forms read the covering index alarms_due (due_ms, then the key).
        try:
            if after is None:
                rows = self._connection().execute(_DUE, (now_ms, limit))
            else:
                position = (after.due_ms, after.namespace, bytes.fromhex(after.object_id))
                rows = self._connection().execute(_DUE_AFTER, (now_ms, *position, limit))
            return [_entry(row) for row in rows]
        except apsw.Error as exc:
            raise read_failed(self.path, exc) from exc

    def alarm_entry(self, namespace: str, object_id: str) -> AlarmEntry | None:
        try:
            row = (
                self._connection()
                .execute(
                    f"SELECT {_ALARM_COLUMNS} FROM alarms WHERE ns=? AND object=?",
                    (namespace, bytes.fromhex(object_id)),
                )
                .fetchone()
            )
        except apsw.Error as exc:
            raise read_failed(self.path, exc) from exc
        return None if row is None else _entry(row)

    def next_alarm_after(self, now_ms: int) -> int | None:
        try:
            row = (
                self._connection()
                .execute(
                    "SELECT due_ms FROM alarms WHERE due_ms > ? ORDER BY due_ms LIMIT 1", (now_ms,)
                )
                .fetchone()
            )
        except apsw.Error as exc:
            raise read_failed(self.path, exc) from exc
        return None if row is None else int(row[0])

    def update_alarm(
        self, entry: AlarmEntry, *, due_ms: int | None, retry_count: int
    ) -> asyncio.Future[bool]:
        key = (entry.namespace, bytes.fromhex(entry.object_id), entry.gen)

        def update(conn: apsw.Connection) -> bool:
            if due_ms is None:
                conn.execute("DELETE FROM alarms WHERE ns=? AND object=? AND gen=?", key)
            else:
                conn.execute(
                    "UPDATE alarms SET due_ms=?, retry_count=?, gen=gen+1"
                    " WHERE ns=? AND object=? AND gen=?",
                    (due_ms, retry_count, *key),
                )
            return conn.changes() > 0

        return self.enqueue_op(update)

    async def peek_alarm(self, namespace: str, object_id: str) -> int | None:
        return await asyncio.wrap_future(self.files.peek(namespace, object_id))

    def release_peeked(self, namespace: str, object_id: str) -> None:
        self.files.release_peeked(namespace, object_id)

    # -- writes ----------------------------------------------------------------

    def enqueue(self, store: _SqliteObjectStore, batch: WriteBatch, done: CommitFuture) -> None:
        self._queue_item(store, batch, done)
        self.alarm_committed(done, batch)

    def enqueue_op(self, op: _Op) -> asyncio.Future[Any]:
        """Run ``op`` in the next group commit, in order; its future gets the result."""
        future = self.loop.create_future()
        self._queue_item(None, op, future)
        return future

    def _queue_item(
        self,
        store: _SqliteObjectStore | None,
        work: WriteBatch | _Op,
        future: asyncio.Future[Any],
    ) -> None:
        if self.read_only:
            raise StorageError(f"{self.path} is open for reading only: nothing can be written")
        if self._closed or self._queue is None:
            raise RuntimeClosed("storage engine is closed")
        self._queue.put((store, work, future))

    def _syncs(self) -> int:
        return self._syncer.syncs if self._syncer is not None else 0

    @property
    def sync_hook(self) -> Callable[[], None] | None:
        """Test hook run in the sync thread before each ``fsync`` (:class:`.walsync.WalSyncer`)."""
        return self._syncer.sync_hook if self._syncer is not None else None

    @sync_hook.setter
    def sync_hook(self, hook: Callable[[], None] | None) -> None:
        if self._syncer is None:
            raise RuntimeClosed("storage engine is not running")
        self._syncer.sync_hook = hook

    def _synced(self, seconds: float) -> None:
        # In the syncer's thread.
        observer = self.commit_observer
        if observer is not None:
            observer.synced(seconds)

    def _hold_commits(self, hold: bool) -> None:
        """Hold commits back (they queue) or let them go; called on the loop."""
        self._held = hold
        if not hold:
            self._flush()  # whatever queued meanwhile (nothing: an empty take)

    def _flush(self) -> None:
        if self._queue is None:
            return
        if self._held:
            # The queue stays scheduled-for, so nothing reschedules it: the
            # release above flushes everything that queued meanwhile.
            return
        group = self._queue.take()
        if not group or self._writer is None:
            return
        observer = self.commit_observer
        if observer is None:
            outcomes = self._commit_group(self._writer, group)
        else:
            start = time.perf_counter()
            outcomes = self._commit_group(self._writer, group)
            seconds = time.perf_counter() - start
            observer.committed(
                seconds, [len(w.writes) for _, w, _ in group if isinstance(w, WriteBatch)]
            )
        assert self._syncer is not None
        self._syncer.release_after_sync(outcomes)

    def _commit_group(self, conn: apsw.Connection, group: list[_Item]) -> list[_Outcome]:
        results: list[Any] = []
        now_ms = int(time.time() * 1000)
        recorded: list[_SqliteObjectStore] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            run: list[tuple[_SqliteObjectStore, WriteBatch]] = []
            for store, work, _ in group:
                if store is None:  # an operation of the engine's own, in order
                    _apply_all(conn, run, self._large_ids, now_ms, recorded)
                    run.clear()
                    results.append(work(conn))  # type: ignore[operator]
                    continue
                if store.broken is None:
                    assert isinstance(work, WriteBatch)
                    self.check_fault(store, work)
                    run.append((store, work))
                results.append(None)
            _apply_all(conn, run, self._large_ids, now_ms, recorded)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            # Someone's batch is bad: commit one by one so only it (and the later
            # batches of its object) fail.
            return [self._commit_one(conn, store, work, future) for store, work, future in group]
        self.commits += 1
        self.batches_committed += sum(1 for store, _, _ in group if store is not None)
        for done in recorded:
            done.recorded_ms = now_ms
        outcomes: list[_Outcome] = []
        for (store, _, future), result in zip(group, results, strict=True):
            broken = store is not None and store.broken is not None
            outcomes.append((future, result, broken_error(store) if broken else None))  # type: ignore[arg-type]
        return outcomes

    def _apply(
        self,
        conn: apsw.Connection,
        store: _SqliteObjectStore | None,
        work: WriteBatch | _Op,
        recorded: list[_SqliteObjectStore],
    ) -> Any:
        if store is None:
            return work(conn)  # type: ignore[operator]
        if store.broken is None:
            assert isinstance(work, WriteBatch)
            self.check_fault(store, work)
            _apply_all(conn, [(store, work)], self._large_ids, int(time.time() * 1000), recorded)
        return None

    def _commit_one(
        self,
        conn: apsw.Connection,
        store: _SqliteObjectStore | None,
        work: WriteBatch | _Op,
        future: asyncio.Future[Any],
    ) -> _Outcome:
        if store is not None and store.broken is not None:
            return (future, None, broken_error(store))
        recorded: list[_SqliteObjectStore] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            result = self._apply(conn, store, work, recorded)
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                with contextlib.suppress(apsw.Error):
                    conn.execute("ROLLBACK")
            failure = CommitFailed(f"commit failed: {exc}")
            failure.__cause__ = exc
            if store is not None:
                store.broken = failure
            return (future, None, failure)
        self.commits += 1
        self.batches_committed += store is not None
        now_ms = int(time.time() * 1000)
        for done in recorded:
            done.recorded_ms = now_ms
        return (future, result, None)


def _move_large_values(conn: apsw.Connection) -> None:
    """Move the values over :data:`_INLINE_MAX` bytes out of ``kv`` (schema 2 to 3).

    The keys are read a page at a time, each page after the last key moved, so a
    large database is walked once and never held in memory whole.
    """
    after: tuple[Any, ...] = ("", b"", "")
    while True:
        keys = conn.execute(
            "SELECT ns, object, key FROM kv WHERE (ns, object, key) > (?, ?, ?)"
            " AND typeof(value) = 'blob' AND length(value) > ?"
            " ORDER BY ns, object, key LIMIT 1000",
            (*after, _INLINE_MAX),
        ).fetchall()
        if not keys:
            return
        for key in keys:
            conn.execute(
                "INSERT INTO large_values (data) SELECT value FROM kv"
                " WHERE ns = ? AND object = ? AND key = ?",
                key,
            )
            moved = conn.last_insert_rowid()
            conn.execute(
                "UPDATE kv SET value = ? WHERE ns = ? AND object = ? AND key = ?", (moved, *key)
            )
        after = tuple(keys[-1])


def _backfill_catalogue(conn: apsw.Connection, files: ObjectFiles) -> None:
    """Enter the objects stored before the catalogue existed (schema 3 to 4).

    One pass over ``kv`` in key order (``GROUP BY`` walks its primary key),
    one over the KV objects' alarms, and one over the SQL objects' files.
    Their names and creation times were never recorded: they stay unknown.
    """
    conn.execute(
        "INSERT OR IGNORE INTO objects (ns, object, sql)"
        " SELECT ns, object, 0 FROM kv GROUP BY ns, object"
    )
    conn.execute(
        "INSERT OR IGNORE INTO objects (ns, object, sql)"
        " SELECT ns, object, 0 FROM alarms WHERE sql = 0"
    )
    for namespace in sql_namespaces(files.root):
        rows = [(namespace, bytes.fromhex(i)) for i in files.list_ids(namespace)]
        conn.executemany("INSERT OR IGNORE INTO objects (ns, object, sql) VALUES (?, ?, 1)", rows)


def _catalogue_entry(row: tuple[Any, ...]) -> CatalogueEntry:
    ns, obj, name, created, written, sql = row
    return CatalogueEntry(ns, bytes(obj).hex(), name, created, written, bool(sql))


# == Export and import (roost.admin.archive) ====================================
# The SQLite engine's side of the export seam (engine.StorageSnapshot) and of
# the import methods, kept apart from the engine's commit path.

#: Seconds a copy waits for a SQL object that a running server holds: a live
#: object keeps its file locked (exclusive locking mode) until it is evicted.
COPY_WAIT: Final = 30.0


class SqliteSnapshot(StorageSnapshot):
    """A read-only view of a data directory, taken while a server may be serving it.

    The shared database is read in one read transaction, which WAL mode lets
    run beside the server's commits: every KV-only object, and every alarm of
    one, is read as of the snapshot's first read.  Each SQL object's file is
    copied through SQLite's backup API under a read transaction of its own, so
    it is consistent as of its copy.  A SQL object that is live in a running
    server holds its file exclusively; the copy waits up to ``wait`` seconds
    for it to be evicted, then fails saying so.  While the copy reads, an
    activation of that object waits for it (up to a second).
    """

    def __init__(self, data_dir: str | Path, *, wait: float = COPY_WAIT) -> None:
        directory = Path(data_dir)
        if not directory.is_dir():
            raise StorageError(f"{directory} is not a directory")
        if datadir.inspect(directory).new:
            raise StorageError(f"{directory} holds no Roost data")
        self.directory = directory
        self.path = directory / _DB_NAME
        self.wait = wait
        self.files = ObjectFiles(directory / datadir.OBJECT_FILES, durability="process")
        try:
            # Read-write without create, as `roost check`: a read-only connection
            # cannot recover a WAL that a crash left.  Nothing here writes.
            conn = apsw.Connection(str(self.path), flags=apsw.SQLITE_OPEN_READWRITE)
            conn.set_busy_timeout(30_000)
            conn.execute("BEGIN")  # the read transaction starts at the first read
            version = conn.execute(
                "SELECT value FROM roost_meta WHERE key='schema_version'"
            ).fetchone()
        except apsw.Error as exc:
            raise read_failed(self.path, exc) from exc
        if version is None or version[0] != _SCHEMA_VERSION:
            conn.close()
            raise StorageError(
                f"{self.path} has storage schema version {version and version[0]}; export "
                f"reads version {_SCHEMA_VERSION}: start a server of this Roost on it once"
            )
        self._conn: apsw.Connection | None = conn

    def _db(self) -> apsw.Connection:
        if self._conn is None:
            raise RuntimeClosed("the snapshot is closed")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(apsw.Error):
                self._conn.execute("COMMIT")
            self._conn.close()
            self._conn = None

    def id_scheme(self, given: bytes | None) -> IdScheme:
        secret = idsecret.resolve(self.directory, given, has_data=True)
        if not secret:
            return IdScheme("unkeyed")
        if given is not None:
            return IdScheme("given", idsecret.fingerprint(secret))
        return IdScheme("stored", idsecret.fingerprint(secret), secret)

    def _namespace_of(self, name: str) -> str:
        """The namespace whose SQL objects live in ``objects/<name>`` (see ObjectFiles)."""
        if name.startswith("x-"):
            try:
                decoded = bytes.fromhex(name[2:]).decode()
            except ValueError:
                return name
            if self.files.namespace_dir(decoded).name == name:
                return decoded
        return name

    def namespaces(self) -> list[str]:
        conn = self._db()
        found: set[str] = set()
        try:
            # A skip scan of the key table's first column: one seek per namespace.
            ns = conn.execute("SELECT min(ns) FROM kv").get
            while isinstance(ns, str):
                found.add(ns)
                ns = conn.execute("SELECT min(ns) FROM kv WHERE ns > ?", (ns,)).get
            found.update(row[0] for row in conn.execute("SELECT DISTINCT ns FROM alarms"))
        except apsw.Error as exc:
            raise read_failed(self.path, exc) from exc
        root = self.files.root
        if root.is_dir():
            found.update(self._namespace_of(d.name) for d in root.iterdir() if d.is_dir())
        return sorted(ns for ns in found if self.count_objects(ns))

    def count_objects(self, namespace: str) -> int:
        try:
            count = (
                self._db()
                .execute(
                    "SELECT count(*) FROM (SELECT object FROM kv WHERE ns = ? UNION "
                    "SELECT object FROM alarms WHERE ns = ? AND sql = 0 AND alarm_ms IS NOT NULL)",
                    (namespace, namespace),
                )
                .get
            )
        except apsw.Error as exc:
            raise read_failed(self.path, exc) from exc
        assert isinstance(count, int)
        return count + len(self.files.list_ids(namespace))

    def objects(self, namespace: str) -> Iterator[ExportedObject]:
        conn = self._db()
        try:
            alarms: dict[bytes, int] = {
                bytes(obj): int(alarm)
                for obj, alarm in conn.execute(
                    "SELECT object, alarm_ms FROM alarms"
                    " WHERE ns = ? AND sql = 0 AND alarm_ms IS NOT NULL",
                    (namespace,),
                )
            }
            names: dict[bytes, str] = {
                bytes(obj): name
                for obj, name in conn.execute(
                    "SELECT object, name FROM objects WHERE ns = ? AND name IS NOT NULL",
                    (namespace,),
                )
            }
            rows = conn.execute(
                f"SELECT object, key, {_VALUE} FROM kv WHERE ns = ? ORDER BY object, key",
                (namespace,),
            )
            for obj, group in itertools.groupby(rows, key=lambda row: bytes(row[0])):
                entries = [(key, bytes(value)) for _, key, value in group]
                alarm = alarms.pop(obj, None)
                yield ExportedObject(namespace, obj.hex(), False, entries, alarm, names.get(obj))
        except apsw.Error as exc:
            raise read_failed(self.path, exc) from exc
        for obj, alarm in sorted(alarms.items()):  # objects that hold an alarm and no key
            yield ExportedObject(namespace, obj.hex(), False, [], alarm, names.get(obj))
        for object_id in self.files.list_ids(namespace):
            name = names.get(bytes.fromhex(object_id))
            yield ExportedObject(namespace, object_id, True, name=name)

    def copy_database(self, namespace: str, object_id: str, target: Path) -> int | None:
        path = self.files.path(namespace, object_id).resolve()
        try:
            source = _sqlite3.connect(
                f"{path.as_uri()}?mode=rw", uri=True, timeout=self.wait, isolation_level=None
            )
        except _sqlite3.Error as exc:
            raise StorageError(f"cannot open the database of object {object_id}: {exc}") from exc
        try:
            # Take the read lock first, through the busy timeout: the backup
            # API itself retries a locked source forever.  Its one step then
            # copies every page under that one read transaction.
            source.execute("BEGIN")
            source.execute("SELECT count(*) FROM sqlite_master").fetchone()
            copy = _sqlite3.connect(target, isolation_level=None)
            try:
                # A new file that the caller syncs (or discards) as a whole: no
                # journal and no fsync of its own (they cost 4 ms per object).
                copy.execute("PRAGMA journal_mode=OFF")
                copy.execute("PRAGMA synchronous=OFF")
                source.backup(copy)
                row = copy.execute("SELECT alarm_ms FROM _roost_alarm WHERE id = 0").fetchone()
            finally:
                copy.close()
        except _sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise StorageError(f"copying the database of object {object_id}: {exc}") from exc
            holder = lock_holder(self.directory) or "none now"
            raise StorageError(
                f"the SQL object {object_id} of {namespace!r} stayed live in the server on "
                f"{self.directory} (pid {holder}) for {self.wait:g} s, and a live object "
                "holds its file locked: export again once it is idle (evicted), or stop "
                "the server first"
            ) from None
        except _sqlite3.Error as exc:
            raise StorageError(f"copying the database of object {object_id}: {exc}") from exc
        finally:
            source.close()
        return None if row is None else int(row[0])


def _adopt_ids(directory: Path, scheme: IdScheme, given: bytes | None) -> None:
    """Key the new data directory ``directory``'s IDs as ``scheme`` (an archive's) says."""
    if scheme.kind == "unkeyed":
        if given is not None:
            raise StorageError(
                f"the archive's object IDs are not keyed with a secret; unset {idsecret.ENV_VAR}"
            )
        return  # no ids.json: a directory with data and none keeps unkeyed IDs
    if given is not None:
        if idsecret.fingerprint(given) != scheme.fingerprint:
            raise StorageError(
                f"the ID secret given ({idsecret.ENV_VAR}) is not the one the archive's "
                "objects were made with: every object ID would change. Give that secret, "
                "or unset it to adopt the secret the archive carries"
            )
        idsecret.resolve(directory, given, has_data=False)  # records its fingerprint only
        return
    if scheme.kind == "given" or scheme.secret is None:
        raise StorageError(
            "the archive's object IDs are keyed with a secret kept outside it (the "
            f"source's {idsecret.ENV_VAR}): set {idsecret.ENV_VAR} to that secret"
        )
    directory.mkdir(parents=True, exist_ok=True)
    content = _json.dumps({"roost_ids": 1, "secret": scheme.secret.hex()})
    path = directory / datadir.ID_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (content + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    datadir.sync_directory(directory)


def _place_database(target: Path, source: Path, object_id: str) -> None:
    """Move the database ``source`` to ``target`` (an object's file), durably,
    once SQLite has checked it."""
    if target.exists():
        raise StorageError(f"object {object_id} already has a database ({target})")
    try:
        conn = _sqlite3.connect(source, isolation_level=None)
        try:
            verdict = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
    except _sqlite3.Error as exc:
        raise StorageError(f"the database of object {object_id} is unreadable: {exc}") from exc
    if verdict != [("ok",)]:
        raise StorageError(f"the database of object {object_id} is damaged: {verdict[:3]}")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(source, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(source, target)
    datadir.sync_directory(target.parent)


def read_failed(path: Path, exc: apsw.Error) -> StorageError:
    """The error for a read of the shared database that SQLite failed.

    A damaged file (``CorruptError``, ``NotADBError``) says so and points at
    ``roost check``; apsw's exceptions never leave the engine.
    """
    if isinstance(exc, (apsw.CorruptError, apsw.NotADBError)):
        return StorageError(
            f"the shared database {path} is damaged ({exc}); run `roost check "
            f"{path.parent}` to see what, and restore the data directory from a backup"
        )
    return StorageError(f"reading {path} failed: {exc}")


def _lock_data_dir(directory: Path) -> int:
    """Hold ``directory/LOCK`` for as long as the engine runs.

    Two processes on one data directory would each believe they own its
    objects (two live instances of one ID, lost updates); the second is refused.
    """
    fd = os.open(directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StorageError(
            f"data directory {directory} is in use by another Roost process (pid {holder})"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def lock_holder(directory: Path) -> str | None:
    """The pid holding ``directory``'s lock (``"unknown"`` if unrecorded), else None.

    For start-up checks that want to refuse before printing anything; the
    engine takes the lock for real when it opens.
    """
    try:
        fd = os.open(directory / "LOCK", os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.read(fd, 32).decode(errors="replace").strip() or "unknown"
    finally:
        os.close(fd)  # also releases the probe's shared lock
    return None


#: The data directory's lock, for Roost's other tools (``roost check``).
lock_data_dir = _lock_data_dir


def _entry(row: tuple[Any, ...]) -> AlarmEntry:
    ns, obj, due, retries, gen, sql = row
    return AlarmEntry(ns, bytes(obj).hex(), int(due), int(retries), int(gen), bool(sql))
