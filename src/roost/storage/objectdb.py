"""One SQL object's own database: its connection, internal tables and transaction.

An object of a SQL class keeps everything in one SQLite database of its own:
the user's tables, and Roost's internal ``_roost_kv`` (the KV API) and
``_roost_alarm`` (the alarm), which user SQL can neither see the rows of nor
change (:mod:`.sqlpolicy`).  One ``COMMIT`` therefore covers SQL writes, KV
writes and the alarm of a batch.

The connection always works inside a transaction that Roost opens before the
first write of a batch and commits when the batch is sealed (see
:class:`~roost.storage.sqlobject.SqlObjectStore`).

Roost's own statements carry a per-process random tag in a comment, so that
no user statement can ever share a prepared (already authorized) statement
with them through the connection's statement cache.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
import time
from collections.abc import Iterator
from typing import Final

from ..errors import StorageError
from .engine import ListQuery, WriteBatch
from .sqllimits import PROGRESS_STEPS, SQLITE_MAX_LENGTH, SqlLimits
from .sqlpolicy import INTERNAL_PREFIX, StatementPolicy

__all__ = ["ObjectDatabase", "configure_connection", "internal"]

_TAG: Final = secrets.token_hex(8)
_DEFAULT_LIMITS: Final = SqlLimits()


def internal(sql: str) -> str:
    """Mark ``sql`` as Roost's own statement (see the module docstring).

    The mark leads the statement: SQLite keeps the text of a ``CREATE`` from
    its first keyword on in ``sqlite_master``, so the tag never shows there.
    """
    return f"/* roost {_TAG} */ {sql}"


# ``_roost_kv`` is a rowid table (its key in an index of its own), not ``WITHOUT
# ROWID``: there each row is a B-tree key, value included, and SQLite reads the
# whole of a key that overflows its page before comparing it, so every search
# that passed a large value read it (docs/storage.md).
_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS _roost_kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS _roost_alarm"
    " (id INTEGER PRIMARY KEY CHECK (id = 0), alarm_ms INTEGER NOT NULL)",
)
_KV_TABLE_SQL: Final = internal("SELECT sql FROM sqlite_master WHERE name = '_roost_kv'")
#: Files written before the change hold ``_roost_kv`` as ``WITHOUT ROWID``.
_KV_REBUILD: Final = (
    "CREATE TABLE _roost_kv_rebuilt (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
    "INSERT INTO _roost_kv_rebuilt SELECT key, value FROM _roost_kv ORDER BY key",
    "DROP TABLE _roost_kv",
    "ALTER TABLE _roost_kv_rebuilt RENAME TO _roost_kv",
)
_BEGIN: Final = internal("BEGIN")
_COMMIT: Final = internal("COMMIT")
_ROLLBACK: Final = internal("ROLLBACK")
_KV_GET: Final = internal("SELECT value FROM _roost_kv WHERE key = ?")
_KV_PUT: Final = internal(
    "INSERT INTO _roost_kv VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
_KV_DELETE: Final = internal("DELETE FROM _roost_kv WHERE key = ?")
_KV_CLEAR: Final = internal("DELETE FROM _roost_kv")
_ALARM_GET: Final = internal("SELECT alarm_ms FROM _roost_alarm WHERE id = 0")
_ALARM_PUT: Final = internal("INSERT OR REPLACE INTO _roost_alarm VALUES (0, ?)")
_ALARM_DELETE: Final = internal("DELETE FROM _roost_alarm")
_SCHEMA_VERSION: Final = internal("PRAGMA schema_version")
_SIZE: Final = internal(
    "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
)
_USER_SCHEMA: Final = internal(
    "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
    " AND name NOT LIKE '\\_roost\\_%' ESCAPE '\\' AND type IN ('table', 'view')"
)


def configure_connection(conn: sqlite3.Connection, *, on_disk: bool, new: bool = True) -> None:
    """Settings of every object connection (before the policy is installed).

    WAL mode is set and checked on every open, new file or not: a file left
    empty by a crash between its creation and this call would otherwise run in
    rollback-journal mode, whose commits the WAL fsync never covers.
    """
    del new  # kept for callers; the check below is needed for every file
    if on_disk:
        # One connection per file for its whole life: no shared-memory index,
        # no other process may open it meanwhile.
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageError(f"cannot put an object database in WAL mode (it is in {mode!r})")
        # COMMIT only hands the WAL frames to the OS; FileSyncPool fsyncs them.
        conn.execute("PRAGMA synchronous=OFF")
        # Checkpoints run when Roost says, with syncing turned on for them.
        conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA cache_size=-2048")


class ObjectDatabase:
    """The connection to one object's database, with its policy and internal tables.

    ``limits`` bound what user SQL may do (:mod:`.sqllimits`); ``path`` is the
    file (``None`` for an in-memory database), for telling a full disk from a
    database at its size limit.
    """

    __slots__ = ("conn", "policy", "unsealed", "limits", "path", "deadline", "timed_out", "_marker")

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        limits: SqlLimits = _DEFAULT_LIMITS,
        path: str | None = None,
    ) -> None:
        self.conn = conn
        self.policy = StatementPolicy()
        #: True when user SQL may have run since the store last took a batch.
        self.unsealed = False
        self.limits = limits
        self.path = path
        #: ``time.monotonic()`` past which the running statement is interrupted
        #: (``None``: no statement of the object's code is running, or no limit).
        self.deadline: float | None = None
        #: True once the progress handler interrupted a statement (until reset).
        self.timed_out = False
        conn.set_authorizer(self.policy)
        with self.trusted():
            row = conn.execute(_KV_TABLE_SQL).fetchone()
            if row is not None and "WITHOUT ROWID" in row[0].upper():
                conn.execute(_BEGIN)
                try:
                    for statement in _KV_REBUILD:
                        conn.execute(internal(statement))
                    conn.execute(_COMMIT)
                except BaseException:
                    conn.execute(_ROLLBACK)
                    raise
            for statement in _SCHEMA:
                conn.execute(internal(statement))
            page_size = int(conn.execute(internal("PRAGMA page_size")).fetchone()[0])
            conn.execute(internal(f"PRAGMA max_page_count={limits.max_page_count(page_size)}"))
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limits.max_row_bytes)
        # Installed once: setting and clearing it around every exec() cost a
        # fifth of a trivial query; a deadline of None makes it a no-op.
        conn.set_progress_handler(self._progress, PROGRESS_STEPS)
        self._marker = self._change_marker()

    def _progress(self) -> bool:
        deadline = self.deadline
        if deadline is None or time.monotonic() < deadline:
            return False
        self.timed_out = True
        return True  # SQLite interrupts the statement (SQLITE_INTERRUPT)

    @contextlib.contextmanager
    def user_statements(self) -> Iterator[sqlite3.Connection]:
        """Run statements of the object's code under the time limit."""
        timeout = self.limits.statement_timeout
        self.timed_out = False
        self.deadline = None if timeout is None else time.monotonic() + timeout
        try:
            yield self.conn
        finally:
            self.deadline = None

    @contextlib.contextmanager
    def trusted(self) -> Iterator[sqlite3.Connection]:
        """Run Roost's own statements (the policy lets them through)."""
        policy = self.policy
        outer = policy.trusted
        policy.trusted = True
        try:
            yield self.conn
        finally:
            policy.trusted = outer

    # -- the transaction ---------------------------------------------------------

    def begin(self) -> None:
        """Open the batch's transaction unless it is open already."""
        if not self.conn.in_transaction:
            self.policy.schema_changed = False
            with self.trusted() as conn:
                conn.execute(_BEGIN)

    def wrote_before(self, changes: int) -> bool:
        """Whether the open transaction (or the one SQLite just rolled back) held
        writes made before ``conn.total_changes`` was ``changes``."""
        return changes != self._marker[0] or self.policy.schema_changed

    def commit(self) -> bool:
        """Commit the open transaction; return whether it changed anything."""
        wrote = self._change_marker() != self._marker
        if self.conn.in_transaction:
            with self.trusted() as conn:
                conn.execute(_COMMIT)
        self._marker = self._change_marker()
        return wrote

    def rollback(self) -> None:
        """Drop the open transaction (nothing of it stays)."""
        if self.conn.in_transaction:
            with self.trusted() as conn:
                conn.execute(_ROLLBACK)
        self._marker = self._change_marker()

    def _change_marker(self) -> tuple[int, int]:
        # Row changes (DML) and schema changes (DDL) together tell whether a
        # transaction wrote anything worth an fsync.
        with self.trusted() as conn:
            version = conn.execute(_SCHEMA_VERSION).fetchone()[0]
            return (conn.total_changes, version)

    def checkpoint(self, *, synced: bool) -> None:
        """Copy the WAL into the database file and empty it (outside a transaction)."""
        with self.trusted() as conn:
            if synced:
                conn.execute("PRAGMA synchronous=FULL")
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                if synced:
                    conn.execute("PRAGMA synchronous=OFF")

    # -- internal tables -----------------------------------------------------------

    @contextlib.contextmanager
    def _kv_lengths(self) -> Iterator[None]:
        # KV values have limits of their own (StorageLimits), which may allow
        # more than user SQL may write; SQLite applies its length limit to
        # reads as well as writes.
        self.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, SQLITE_MAX_LENGTH)
        try:
            yield
        finally:
            self.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, self.limits.max_row_bytes)

    def read(self, keys: list[str]) -> dict[str, bytes]:
        with self.trusted() as conn, self._kv_lengths(), self._reading():
            found: dict[str, bytes] = {}
            for key in keys:
                row = conn.execute(_KV_GET, (key,)).fetchone()
                if row is not None:
                    found[key] = row[0]
            return found

    def read_range(self, query: ListQuery) -> list[tuple[str, bytes]]:
        tail, params = query.sql_tail()
        with self.trusted() as conn, self._kv_lengths(), self._reading():
            return list(
                conn.execute(internal(f"SELECT key, value FROM _roost_kv WHERE 1 {tail}"), params)
            )

    def read_alarm(self) -> int | None:
        with self.trusted() as conn, self._reading():
            row = conn.execute(_ALARM_GET).fetchone()
        return None if row is None else int(row[0])

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        # sqlite3's exceptions never leave storage: a damaged file is a StorageError.
        try:
            yield
        except sqlite3.Error as exc:
            where = self.path or "an in-memory database"
            damaged = getattr(exc, "sqlite_errorname", "").startswith(
                ("SQLITE_CORRUPT", "SQLITE_NOTADB")
            )
            hint = "; run `roost check DATA_DIR` and restore it from a backup" if damaged else ""
            message = f"reading the object's database {where} failed: {exc}{hint}"
            raise StorageError(message) from exc

    def apply(self, batch: WriteBatch) -> None:
        """Write the batch's KV and alarm changes into the open transaction."""
        with self.trusted() as conn:
            if batch.clear:
                conn.execute(_KV_CLEAR)
            deletes = [(k,) for k, v in batch.writes.items() if v is None]
            puts = [(k, v) for k, v in batch.writes.items() if v is not None]
            if deletes:
                conn.executemany(_KV_DELETE, deletes)
            if puts:
                with self._kv_lengths():
                    conn.executemany(_KV_PUT, puts)
            if batch.alarm_changed:
                if batch.alarm_ms is None:
                    conn.execute(_ALARM_DELETE)
                else:
                    conn.execute(_ALARM_PUT, (batch.alarm_ms,))

    def drop_user_schema(self) -> None:
        """Drop every user table and view (with their indexes and triggers), in
        the open transaction: ``delete_all()`` of a SQL object.  The alarm stays."""
        with self.trusted() as conn:
            conn.execute(internal("PRAGMA defer_foreign_keys=ON"))
            for kind, name in conn.execute(_USER_SCHEMA).fetchall():
                if name.lower().startswith(INTERNAL_PREFIX):
                    continue
                quoted = '"' + name.replace('"', '""') + '"'
                conn.execute(internal(f"DROP {kind.upper()} IF EXISTS {quoted}"))

    @property
    def size(self) -> int:
        """Bytes the database takes (pages in use times the page size)."""
        with self.trusted() as conn:
            return int(conn.execute(_SIZE).fetchone()[0])

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.rollback()
        self.conn.close()
