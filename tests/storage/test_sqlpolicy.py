"""The statement policy as a plain function: which actions user SQL may take."""

from __future__ import annotations

import sqlite3

import pytest

from roost.storage.sqlpolicy import StatementPolicy


@pytest.mark.parametrize(
    ("action", "arg1", "arg2"),
    [
        (sqlite3.SQLITE_READ, "_roost_kv", "value"),
        (sqlite3.SQLITE_READ, "_ROOST_ALARM", "alarm_ms"),
        (sqlite3.SQLITE_CREATE_TABLE, "_roost_mine", None),
        (sqlite3.SQLITE_CREATE_TRIGGER, "t1", "_roost_kv"),
        (sqlite3.SQLITE_TRANSACTION, "BEGIN", None),
        (sqlite3.SQLITE_SAVEPOINT, "BEGIN", "sp"),
        (sqlite3.SQLITE_ATTACH, "other.db", None),
        (sqlite3.SQLITE_DETACH, "other", None),
        (sqlite3.SQLITE_PRAGMA, "journal_mode", None),
        (sqlite3.SQLITE_PRAGMA, "user_version", "7"),
        (sqlite3.SQLITE_PRAGMA, "writable_schema", "1"),
        (sqlite3.SQLITE_FUNCTION, None, "load_extension"),
        (sqlite3.SQLITE_READ, "sqlite_stmt", "sql"),
        (sqlite3.SQLITE_CREATE_VTABLE, "pages", "sqlite_dbpage"),
    ],
)
def test_refused_actions(action: int, arg1: str | None, arg2: str | None) -> None:
    policy = StatementPolicy()
    assert policy(action, arg1, arg2, "main", None) == sqlite3.SQLITE_DENY
    assert policy.take_refusal()
    assert policy.take_refusal() is None


@pytest.mark.parametrize(
    ("action", "arg1", "arg2"),
    [
        (sqlite3.SQLITE_READ, "notes", "body"),
        (sqlite3.SQLITE_INSERT, "notes", None),
        (sqlite3.SQLITE_UPDATE, "sqlite_master", "sql"),  # what CREATE TABLE does inside
        (sqlite3.SQLITE_PRAGMA, "table_info", "notes"),
        (sqlite3.SQLITE_PRAGMA, "user_version", None),
        (sqlite3.SQLITE_PRAGMA, "defer_foreign_keys", "1"),
        (sqlite3.SQLITE_FUNCTION, None, "json_extract"),
        (sqlite3.SQLITE_CREATE_VTABLE, "docs", "fts5"),
    ],
)
def test_allowed_actions(action: int, arg1: str | None, arg2: str | None) -> None:
    policy = StatementPolicy()
    assert policy(action, arg1, arg2, "main", None) == sqlite3.SQLITE_OK
    assert policy.refusal is None


def test_trusted_statements_pass() -> None:
    policy = StatementPolicy()
    policy.trusted = True
    assert policy(sqlite3.SQLITE_READ, "_roost_kv", "value", "main", None) == sqlite3.SQLITE_OK
    assert policy(sqlite3.SQLITE_TRANSACTION, "COMMIT", None, None, None) == sqlite3.SQLITE_OK
