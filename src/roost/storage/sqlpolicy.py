"""What user SQL may do in an object's database: the statement policy.

SQLite asks an *authorizer* about every action a statement will take while it
prepares the statement, before anything runs.  :class:`StatementPolicy` is that
authorizer.  It refuses, for user statements:

* anything that names Roost's internal tables (prefix ``_roost_``), where the
  object's KV data and alarm live;
* transaction control by hand (``BEGIN``, ``COMMIT``, ``ROLLBACK``,
  ``SAVEPOINT``, ``RELEASE``): Roost owns the transaction, which is the batch;
* ``ATTACH`` and ``DETACH``: one object can never reach another's file;
* PRAGMAs other than a read-only list (and those only to read);
* ``load_extension()`` (extension loading also stays disabled);
* virtual tables that expose the file's pages or prepared statements.

Roost's own statements run with :attr:`StatementPolicy.trusted` set.  The policy
keeps the reason of its last refusal, so the caller can raise an error that
says what was refused and why.
"""

from __future__ import annotations

import sqlite3
from typing import Final

__all__ = ["INTERNAL_PREFIX", "SAFE_PRAGMAS", "StatementPolicy"]

#: Tables whose names start with this (any case) are Roost's.
INTERNAL_PREFIX: Final = "_roost_"

#: Read-only PRAGMAs that take an argument (a table or index name).
_PRAGMAS_WITH_ARGUMENT: Final = frozenset(
    {
        "table_info",
        "table_xinfo",
        "table_list",
        "index_info",
        "index_xinfo",
        "index_list",
        "foreign_key_list",
        "foreign_key_check",
        "quick_check",
        "integrity_check",
    }
)
#: PRAGMAs user SQL may run, only to read (never ``PRAGMA x = value``).
SAFE_PRAGMAS: Final = _PRAGMAS_WITH_ARGUMENT | {
    "collation_list",
    "page_count",
    "page_size",
    "freelist_count",
    "data_version",
    "user_version",
    "schema_version",
    "foreign_keys",
    "defer_foreign_keys",
    "function_list",
    "module_list",
    "pragma_list",
    "compile_options",
    "encoding",
}
#: PRAGMAs that may also be *set*: they only change how the current
#: transaction checks constraints.
_SETTABLE_PRAGMAS: Final = frozenset({"defer_foreign_keys"})

_REFUSED_FUNCTIONS: Final = frozenset({"load_extension", "fts3_tokenizer", "readfile", "writefile"})
_REFUSED_TABLES: Final = frozenset({"sqlite_stmt", "sqlite_dbpage", "dbstat"})
_ALLOWED_MODULES: Final = frozenset(
    {"fts3", "fts4", "fts5", "fts4aux", "fts5vocab", "fts3tokenize", "rtree", "rtree_i32"}
)

_TRANSACTION_ACTIONS: Final = {sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT}
#: Actions that change the schema (DDL), which ``total_changes`` does not count.
_SCHEMA_ACTIONS: Final = frozenset(
    getattr(sqlite3, name)
    for name in dir(sqlite3)
    if name.startswith(("SQLITE_CREATE_", "SQLITE_DROP_", "SQLITE_ALTER_"))
)
_ATTACH_ACTIONS: Final = {sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH}


class StatementPolicy:
    """The authorizer of one object's connection (see the module docstring)."""

    __slots__ = ("trusted", "refusal", "schema_changed")

    def __init__(self) -> None:
        #: True while Roost runs its own statements.
        self.trusted = False
        #: True once user SQL prepared a statement that changes the schema (the
        #: database clears it when a transaction starts).
        self.schema_changed = False
        #: Why the last statement was refused (``None``: nothing refused since
        #: :meth:`take_refusal`).
        self.refusal: str | None = None

    def take_refusal(self) -> str | None:
        """Return and forget the reason of the last refusal."""
        reason, self.refusal = self.refusal, None
        return reason

    def __call__(
        self,
        action: int,
        arg1: str | None,
        arg2: str | None,
        database: str | None,
        source: str | None,
    ) -> int:
        if self.trusted:
            return sqlite3.SQLITE_OK
        if action in _SCHEMA_ACTIONS:
            self.schema_changed = True
        reason = self._check(action, arg1, arg2)
        if reason is None:
            return sqlite3.SQLITE_OK
        if self.refusal is None:
            self.refusal = reason
        return sqlite3.SQLITE_DENY

    def _check(self, action: int, arg1: str | None, arg2: str | None) -> str | None:
        for name in (arg1, arg2):
            if name is not None and name.lower().startswith(INTERNAL_PREFIX):
                return (
                    f"{name!r} is internal to Roost (it holds the object's KV data and "
                    f"alarm); use the KV and alarm APIs instead"
                )
        if action in _TRANSACTION_ACTIONS:
            return (
                "transaction control by hand is not allowed: Roost commits each batch "
                "of writes itself; use storage.sql.transaction_sync(fn) for atomic work"
            )
        if action in _ATTACH_ACTIONS:
            return "ATTACH and DETACH are not allowed: an object may only use its own database"
        if action == sqlite3.SQLITE_PRAGMA:
            return _check_pragma((arg1 or "").lower(), arg2)
        if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _REFUSED_FUNCTIONS:
            return f"the SQL function {arg2}() is not allowed"
        if action == sqlite3.SQLITE_READ and (arg1 or "").lower() in _REFUSED_TABLES:
            return f"the virtual table {arg1} is not allowed"
        if action == sqlite3.SQLITE_CREATE_VTABLE and (arg2 or "").lower() not in _ALLOWED_MODULES:
            return (
                f"virtual tables of module {arg2!r} are not allowed "
                f"(allowed: {', '.join(sorted(_ALLOWED_MODULES))})"
            )
        return None


def _check_pragma(name: str, argument: str | None) -> str | None:
    if name not in SAFE_PRAGMAS:
        return (
            f"PRAGMA {name} is not allowed; allowed (read-only): {', '.join(sorted(SAFE_PRAGMAS))}"
        )
    if argument is None or name in _PRAGMAS_WITH_ARGUMENT or name in _SETTABLE_PRAGMAS:
        return None
    return f"PRAGMA {name} may only be read here, not set"
