"""The SQL API of SQL objects: ``self.ctx.storage.sql``.

Synchronous, as in Cloudflare's SQLite-backed Durable Objects: a statement runs
at once on the object's own database, inside the transaction of the current
batch, so it sees every earlier write of the object and joins the same atomic
commit and output gate as KV writes (docs/storage.md, docs/consistency.md).

A query may hold several statements separated by ``;`` (then without
parameters); the cursor holds the rows of the last one.  A query either runs
whole or changes nothing: a failing statement undoes the ones before it.
sqlite3 errors never leak: they become :class:`~roost.SqlError`,
:class:`~roost.SqlStatementRefused`, :class:`~roost.SqlTimeout` and
:class:`~roost.StorageLimitExceeded` (past :class:`~roost.SqlLimits`), or (for
I/O failures, after which the object is reset) :class:`~roost.StorageError`.
A failure after which SQLite has rolled back the whole open transaction (an
interrupted write, for one) also resets the object when that transaction held
earlier writes: they are gone with it.
"""

from __future__ import annotations

import inspect
import itertools
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ..errors import SqlError, SqlStatementRefused, SqlTimeout, StorageError, StorageLimitExceeded
from .objectdb import ObjectDatabase, internal
from .sqllimits import disk_is_full

if TYPE_CHECKING:
    from .kv import Storage

__all__ = ["SqlCursor", "SqlStorage", "split_statements"]

T = TypeVar("T")
#: Values a statement takes as parameters and gives back in rows.
SqlValue = None | int | float | str | bytes

_PARAM_TYPES: Final = (type(None), int, float, str, bytes)
#: SQLite errors after which the open transaction cannot be trusted.
_FATAL: Final = (
    "SQLITE_FULL",
    "SQLITE_IOERR",
    "SQLITE_CORRUPT",
    "SQLITE_NOTADB",
    "SQLITE_NOMEM",
    "SQLITE_CANTOPEN",
)
_savepoints = itertools.count()


class SqlCursor:
    """The result of :meth:`SqlStorage.exec`: rows to read once, and counters.

    Iterating gives each row as a ``dict`` of column name to value; :meth:`raw`
    gives tuples instead.  Rows are consumed as they are read, by whichever
    method reads them.
    """

    __slots__ = ("_columns", "_rows", "_next", "_rows_read", "_rows_written")

    def __init__(
        self,
        columns: list[str],
        rows: list[tuple[Any, ...]],
        *,
        rows_read: int,
        rows_written: int,
    ) -> None:
        self._columns = columns
        self._rows = rows
        self._next = 0
        self._rows_read = rows_read
        self._rows_written = rows_written

    @property
    def column_names(self) -> list[str]:
        """Names of the result's columns (empty for a statement without rows)."""
        return list(self._columns)

    @property
    def rows_read(self) -> int:
        """Rows the query read: the rows it returned plus the rows it changed.

        (SQLite's Python binding does not expose its scan counters, so rows a
        query examined without returning or changing them are not counted.)
        """
        return self._rows_read

    @property
    def rows_written(self) -> int:
        """Rows the query inserted, updated or deleted (including by triggers)."""
        return self._rows_written

    def _take(self) -> list[tuple[Any, ...]]:
        rows = self._rows[self._next :]
        self._next = len(self._rows)
        return rows

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._next >= len(self._rows):
            raise StopIteration
        row = self._rows[self._next]
        self._next += 1
        return dict(zip(self._columns, row, strict=True))

    def raw(self) -> Iterator[tuple[Any, ...]]:
        """The remaining rows as tuples, in column order."""
        return iter(self._take())

    def to_list(self) -> list[dict[str, Any]]:
        """The remaining rows as a list of dicts."""
        return [dict(zip(self._columns, row, strict=True)) for row in self._take()]

    def one(self) -> dict[str, Any]:
        """The only remaining row; :class:`~roost.SqlError` unless there is exactly one."""
        rows = self._take()
        if len(rows) != 1:
            raise SqlError(f"expected exactly one row, but the query returned {len(rows)}")
        return dict(zip(self._columns, rows[0], strict=True))

    def __repr__(self) -> str:
        return (
            f"<SqlCursor columns={self._columns} rows={len(self._rows) - self._next} "
            f"rows_read={self._rows_read} rows_written={self._rows_written}>"
        )


class SqlStorage:
    """``ctx.storage.sql``: the object's own SQLite database."""

    __slots__ = ("_storage",)

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def exec(self, query: str, *params: SqlValue) -> SqlCursor:
        """Run ``query`` with ``?`` parameters; return a cursor over its rows.

        Parameters are ``None``, ``bool``, ``int`` (64-bit), ``float``, ``str`` or
        ``bytes``.  Raises :class:`~roost.SqlError` when the query fails and
        :class:`~roost.SqlStatementRefused` when the storage contract forbids
        it; in both cases the query changed nothing.
        """
        if not isinstance(query, str):
            raise TypeError(f"exec() takes the query as a str, not {type(query).__name__}")
        nul = query.find("\x00")
        if nul != -1:
            # SQLite would end the statement there; Python refuses it with a
            # bare ValueError (or ProgrammingError) that names no query.
            raise SqlError(
                f"the query holds a NUL character (U+0000) at position {nul}; pass text "
                "with NUL characters as a parameter instead"
            )
        statements = split_statements(query)
        if not statements:
            raise SqlError("the query holds no SQL statement")
        if len(statements) > 1 and params:
            raise SqlError(
                f"parameters may only be given to a single statement; this query holds "
                f"{len(statements)}"
            )
        values = [_check_param(i, p) for i, p in enumerate(params, 1)]
        db = self._storage._sql_begin()
        conn = db.conn
        before = conn.total_changes
        savepoint = _internal_savepoint(db) if len(statements) > 1 else None
        returned = 0
        statement = statements[0]
        try:
            with db.user_statements():
                for statement in statements[:-1]:
                    returned += len(conn.execute(statement).fetchall())
                statement = statements[-1]
                cursor = conn.execute(statement, values)
                rows = cursor.fetchall()
                columns = [d[0] for d in cursor.description or ()]
        except (sqlite3.Error, OverflowError) as exc:
            raise self._failed(db, exc, statement, savepoint, before) from None
        if savepoint is not None:
            savepoint.release()
        written = conn.total_changes - before
        return SqlCursor(
            columns, rows, rows_read=returned + len(rows) + written, rows_written=written
        )

    def transaction_sync(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` atomically: if it raises, its SQL writes are undone.

        ``fn`` is a plain (not async) function; transactions may nest.  Its
        writes commit with the current batch like any other write.
        """
        db = self._storage._sql_begin()
        savepoint = _internal_savepoint(db)
        try:
            result = fn()
            if inspect.isawaitable(result):
                close = getattr(result, "close", None)
                if close is not None:
                    close()
                raise TypeError("transaction_sync() takes a plain function, not an async one")
        except BaseException:
            savepoint.undo()
            raise
        savepoint.release()
        return result

    @property
    def database_size(self) -> int:
        """Size of the object's database in bytes."""
        return self._storage._sql_database().size

    def _failed(
        self,
        db: ObjectDatabase,
        exc: BaseException,
        statement: str,
        savepoint: _Savepoint | None,
        before: int,
    ) -> BaseException:
        refusal = db.policy.take_refusal()
        conn = db.conn
        name = getattr(exc, "sqlite_errorname", None)
        shown = " ".join(statement.split())
        if len(shown) > 120:
            shown = shown[:117] + "..."
        limit = _over_limit(db, name, shown)
        if limit is not None and not conn.in_transaction and not db.wrote_before(before):
            # SQLite rolled back a transaction that held nothing but this query:
            # nothing is lost, and the next statement opens a new one.
            return limit
        if not conn.in_transaction or (
            limit is None and name is not None and name.startswith(_FATAL)
        ):
            # SQLite rolled the whole transaction back (or cannot be trusted):
            # the batch is lost, so the object must be reset.
            error: StorageError = StorageError(f"the object's database failed: {exc}")
            if limit is not None:
                error = type(limit)(
                    f"{limit}; SQLite undid the object's writes since its last commit "
                    "with it, and the object was reset"
                )
            error.__cause__ = exc
            self._storage._sql_failed(error)
            return error
        if savepoint is not None:
            savepoint.undo()
        if limit is not None:
            return limit
        if refusal is not None:
            return SqlStatementRefused(f"statement refused: {refusal} (in: {shown})")
        if isinstance(exc, OverflowError):
            return SqlError(f"an integer parameter is out of SQLite's 64-bit range (in: {shown})")
        return SqlError(f"{exc} (in: {shown})", sqlite_error=name)


def _over_limit(
    db: ObjectDatabase, name: str | None, shown: str
) -> SqlTimeout | StorageLimitExceeded | None:
    """The error for a statement stopped by one of ``db.limits``, if it was."""
    limits = db.limits
    if name == "SQLITE_INTERRUPT" and db.timed_out:
        return SqlTimeout(
            f"the query ran past its time limit of {limits.timeout_text} "
            f"(SqlLimits.statement_timeout) and was interrupted (in: {shown})"
        )
    if name == "SQLITE_TOOBIG":
        return StorageLimitExceeded(
            f"a string, BLOB or row is over the {limits.max_row_bytes}-byte limit "
            f"(SqlLimits.max_row_bytes) (in: {shown})"
        )
    if name == "SQLITE_FULL" and not disk_is_full(db.path):
        return StorageLimitExceeded(
            f"the object's database is at its size limit of {limits.max_database_bytes} bytes "
            f"(SqlLimits.max_database_bytes); delete data to make room (in: {shown})"
        )
    return None


class _Savepoint:
    __slots__ = ("_db", "_name")

    def __init__(self, db: ObjectDatabase, name: str) -> None:
        self._db = db
        self._name = name
        self._run(f"SAVEPOINT {name}")

    def _run(self, sql: str) -> None:
        with self._db.trusted() as conn:
            conn.execute(internal(sql))

    def release(self) -> None:
        self._run(f"RELEASE {self._name}")

    def undo(self) -> None:
        if self._db.conn.in_transaction:
            self._run(f"ROLLBACK TO {self._name}")
            self._run(f"RELEASE {self._name}")


def _internal_savepoint(db: ObjectDatabase) -> _Savepoint:
    return _Savepoint(db, f"roost_{next(_savepoints)}")


def _check_param(position: int, value: object) -> SqlValue:
    if isinstance(value, bool):
        return int(value)
    if type(value) in _PARAM_TYPES:
        return value  # type: ignore[return-value]
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(
        f"SQL parameter {position} is a {type(value).__name__}; parameters are None, bool, "
        "int, float, str or bytes"
    )


def split_statements(query: str) -> list[str]:
    """Split ``query`` into its statements, dropping empty ones and bare comments."""
    statements: list[str] = []
    start = 0
    for end in _semicolons(query):
        chunk = query[start : end + 1]
        if sqlite3.complete_statement(chunk):  # false inside a trigger's body
            if not _blank(chunk):
                statements.append(chunk)
            start = end + 1
    tail = query[start:]
    if not _blank(tail):
        statements.append(tail)
    return statements


def _semicolons(text: str) -> Iterator[int]:
    """Positions of the ``;`` that are outside quotes and comments."""
    for index, kind in _scan(text):
        if kind == ";":
            yield index


def _blank(text: str) -> bool:
    return all(kind == ";" for _, kind in _scan(text) if kind != " ")


def _scan(text: str) -> Sequence[tuple[int, str]]:
    """Classify ``text``: ``";"`` for a separator, ``" "`` for blank or comment,
    ``"x"`` for anything that is part of a statement (one entry per token start)."""
    out: list[tuple[int, str]] = []
    i, n = 0, len(text)
    closers = {"'": "'", '"': '"', "`": "`", "[": "]"}
    while i < n:
        c = text[i]
        if c == ";":
            out.append((i, ";"))
            i += 1
        elif c.isspace():
            i += 1
        elif text.startswith("--", i):
            newline = text.find("\n", i)
            i = n if newline == -1 else newline + 1
        elif text.startswith("/*", i):
            close = text.find("*/", i + 2)
            i = n if close == -1 else close + 2
        elif c in closers:
            out.append((i, "x"))
            close = text.find(closers[c], i + 1)
            while close != -1 and c != "[" and text.startswith(closers[c] * 2, close):
                close = text.find(closers[c], close + 2)
            i = n if close == -1 else close + 1
        else:
            out.append((i, "x"))
            i += 1
    return out
