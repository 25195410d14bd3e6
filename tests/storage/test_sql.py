"""The SQL API of SQL objects, on the in-memory and the SQLite engine."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import roost
from roost import CommitFailed, SqlError, SqlNotEnabled, SqlStatementRefused
from roost.storage.engine import CommitFuture, WriteBatch
from roost.storage.memory import MemoryEngine
from roost.testing import fail_commits, list_object_ids, run_in_object
from tests.conftest import quiesce

Factory = Callable[..., Awaitable[roost.Runtime]]


class Notes(roost.DurableObject, sql=True):
    """A SQL object whose tests call its storage from run_in_object."""

    def __init__(self, ctx: roost.ObjectState, env: roost.Env) -> None:
        super().__init__(ctx, env)
        ctx.storage.sql.exec(
            "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)"
        )

    async def add(self, body: str) -> int:
        cursor = self.ctx.storage.sql.exec("INSERT INTO notes (body) VALUES (?) RETURNING id", body)
        return int(cursor.one()["id"])

    async def add_with_kv(self, body: str) -> None:
        self.ctx.storage.sql.exec("INSERT INTO notes (body) VALUES (?)", body)
        await self.ctx.storage.put("last", body)

    async def bodies(self) -> list[str]:
        return [r["body"] for r in self.ctx.storage.sql.exec("SELECT body FROM notes ORDER BY id")]

    async def run(self, query: str) -> list[dict[str, Any]]:
        return self.ctx.storage.sql.exec(query).to_list()


class Plain(roost.DurableObject):
    async def touch_sql(self) -> None:
        self.ctx.storage.sql.exec("SELECT 1")


@pytest.fixture(params=["memory", "sqlite"])
def roost_data_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path | None:
    return None if request.param == "memory" else tmp_path / "data"


@pytest.fixture
def roost_objects() -> dict[str, type[roost.DurableObject]]:
    return {"NOTES": Notes, "PLAIN": Plain}


async def sql(stub: roost.Stub, fn: Callable[[roost.SqlStorage], Any]) -> Any:
    return await run_in_object(stub, lambda obj, ctx: fn(ctx.storage.sql))


async def test_schema_insert_query_with_parameters(roost_env: roost.Env) -> None:
    stub = roost_env.NOTES.get_by_name("a")
    assert await stub.add("first") == 1
    assert await stub.add("second") == 2
    rows = await sql(stub, lambda s: s.exec("SELECT * FROM notes WHERE id > ?", 1).to_list())
    assert rows == [{"id": 2, "body": "second"}]
    assert await stub.bodies() == ["first", "second"]


async def test_cursor_methods_and_counters(roost_env: roost.Env) -> None:
    stub = roost_env.NOTES.get_by_name("a")

    def work(s: roost.SqlStorage) -> dict[str, Any]:
        inserted = s.exec("INSERT INTO notes (body) VALUES ('a'), ('b'), ('c')")
        updated = s.exec("UPDATE notes SET body = upper(body) WHERE body != 'b'")
        selected = s.exec("SELECT id, body FROM notes ORDER BY id")
        first = next(selected)
        rest = list(selected.raw())
        return {
            "inserted": (inserted.rows_written, inserted.column_names, inserted.to_list()),
            "updated": (updated.rows_written, updated.rows_read),
            "columns": selected.column_names,
            "first": first,
            "rest": rest,
            "read": selected.rows_read,
            "written": selected.rows_written,
            "one": s.exec("SELECT count(*) AS n FROM notes").one(),
        }

    got = await sql(stub, work)
    assert got["inserted"] == (3, [], [])
    assert got["updated"] == (2, 2)
    assert got["columns"] == ["id", "body"]
    assert got["first"] == {"id": 1, "body": "A"}
    assert got["rest"] == [(2, "b"), (3, "C")]
    assert (got["read"], got["written"]) == (3, 0)
    assert got["one"] == {"n": 3}


async def test_one_needs_exactly_one_row(roost_env: roost.Env) -> None:
    stub = roost_env.NOTES.get_by_name("a")
    with pytest.raises(SqlError, match="exactly one row, but the query returned 0"):
        await sql(stub, lambda s: s.exec("SELECT * FROM notes").one())
    await stub.add("x")
    await stub.add("y")
    with pytest.raises(SqlError, match="returned 2"):
        await sql(stub, lambda s: s.exec("SELECT * FROM notes").one())


async def test_database_size_grows(roost_env: roost.Env) -> None:
    stub = roost_env.NOTES.get_by_name("a")
    before = await sql(stub, lambda s: s.database_size)
    await sql(stub, lambda s: s.exec("INSERT INTO notes (body) VALUES (?)", "x" * 100_000))
    after = await sql(stub, lambda s: s.database_size)
    assert before > 0
    assert after > before + 90_000


async def test_several_statements_run_whole(roost_env: roost.Env) -> None:
    stub = roost_env.NOTES.get_by_name("a")
    rows = await sql(
        stub,
        lambda s: s.exec(
            "CREATE TABLE t (a); INSERT INTO t VALUES (1); -- a comment; with a ';'\n"
            "INSERT INTO t VALUES (';'); SELECT a FROM t ORDER BY rowid;"
        ).to_list(),
    )
    assert rows == [{"a": 1}, {"a": ";"}]
    with pytest.raises(SqlError, match="UNIQUE"):
        await sql(
            stub,
            lambda s: s.exec(
                "CREATE TABLE u (a UNIQUE); INSERT INTO u VALUES (1); INSERT INTO u VALUES (1)"
            ),
        )
    # The failing query undid its first statements too.
    tables = await stub.run("SELECT name FROM sqlite_master WHERE name = 'u'")
    assert tables == []
    with pytest.raises(SqlError, match="single statement"):
        await sql(stub, lambda s: s.exec("SELECT ?; SELECT 2", 1))


async def test_errors_are_translated(roost_env: roost.Env) -> None:
    stub = roost_env.NOTES.get_by_name("a")
    with pytest.raises(SqlError, match="syntax error") as syntax:
        await sql(stub, lambda s: s.exec("SELEKT 1"))
    assert syntax.value.sqlite_error == "SQLITE_ERROR"
    assert isinstance(syntax.value, ValueError)
    with pytest.raises(SqlError) as constraint:
        await sql(stub, lambda s: s.exec("INSERT INTO notes (id, body) VALUES (1, NULL)"))
    assert constraint.value.sqlite_error == "SQLITE_CONSTRAINT_NOTNULL"
    with pytest.raises(SqlError, match="64-bit"):
        await sql(stub, lambda s: s.exec("SELECT ?", 2**70))
    with pytest.raises(TypeError, match="parameter 1 is a dict"):
        await sql(stub, lambda s: s.exec("SELECT ?", {}))
    with pytest.raises(SqlError, match="no SQL statement"):
        await sql(stub, lambda s: s.exec("  -- nothing"))
    # The object is still healthy.
    assert await stub.add("ok") == 1


REFUSED = [
    ("BEGIN", "transaction control"),
    ("COMMIT", "transaction control"),
    ("SAVEPOINT s", "transaction control"),
    ("RELEASE s", "transaction control"),
    ("ATTACH DATABASE ':memory:' AS other", "ATTACH and DETACH"),
    ("DETACH DATABASE main", "ATTACH and DETACH"),
    ("PRAGMA journal_mode = DELETE", "PRAGMA journal_mode is not allowed"),
    ("PRAGMA synchronous = OFF", "PRAGMA synchronous is not allowed"),
    ("PRAGMA user_version = 5", "may only be read"),
    ("SELECT load_extension('evil')", "load_extension"),
    ("SELECT * FROM _roost_kv", "internal to Roost"),
    ("DELETE FROM _roost_alarm", "internal to Roost"),
    ("DROP TABLE _roost_kv", "internal to Roost"),
    ("CREATE TABLE _roost_mine (a)", "internal to Roost"),
    ("SELECT * FROM pragma_table_info('_roost_kv')", "internal"),
    ("SELECT sql FROM sqlite_stmt", "sqlite_stmt"),
    ("CREATE VIRTUAL TABLE s USING dbstat", "dbstat"),
]


@pytest.mark.parametrize(("query", "reason"), REFUSED)
async def test_refused_statements_say_why_and_change_nothing(
    roost_env: roost.Env, query: str, reason: str
) -> None:
    stub = roost_env.NOTES.get_by_name("a")
    await stub.add_with_kv("kept")
    with pytest.raises(SqlStatementRefused, match=reason):
        await sql(stub, lambda s: s.exec(f"INSERT INTO notes (body) VALUES ('no'); {query}"))
    assert await stub.bodies() == ["kept"]
    assert await run_in_object(stub, lambda obj, ctx: ctx.storage.get("last")) == "kept"
    # Later statements work as before.
    assert await stub.add("after") == 2


@pytest.mark.parametrize(
    "indirect",
    [
        "CREATE TRIGGER t AFTER INSERT ON notes BEGIN DELETE FROM _roost_kv; END",
        "CREATE VIEW v AS SELECT * FROM _roost_kv",
    ],
)
async def test_triggers_and_views_cannot_reach_internal_tables(
    roost_env: roost.Env, indirect: str
) -> None:
    # SQLite checks a trigger's body and a view's query when they are used:
    # then they are refused like the statement itself would be.
    stub = roost_env.NOTES.get_by_name("a")
    await stub.add_with_kv("kept")
    await sql(stub, lambda s: s.exec(indirect))
    use = "SELECT * FROM v" if "VIEW" in indirect else "INSERT INTO notes (body) VALUES ('x')"
    with pytest.raises(SqlStatementRefused, match="internal to Roost"):
        await sql(stub, lambda s: s.exec(use))
    assert await stub.bodies() == ["kept"]
    assert await run_in_object(stub, lambda obj, ctx: ctx.storage.get("last")) == "kept"


async def test_sql_on_a_kv_class_is_a_clear_error(roost_env: roost.Env) -> None:
    with pytest.raises(SqlNotEnabled, match="sql=True"):
        await roost_env.PLAIN.get_by_name("a").touch_sql()


async def test_transaction_sync(roost_env: roost.Env) -> None:
    stub = roost_env.NOTES.get_by_name("a")

    def failing(s: roost.SqlStorage) -> None:
        def body() -> None:
            s.exec("INSERT INTO notes (body) VALUES ('inner')")
            raise KeyError("abort")

        s.exec("INSERT INTO notes (body) VALUES ('outer')")
        with pytest.raises(KeyError):
            s.transaction_sync(body)

    await sql(stub, failing)
    assert await stub.bodies() == ["outer"]

    def nested(s: roost.SqlStorage) -> int:
        def inner() -> int:
            s.exec("INSERT INTO notes (body) VALUES ('nested')")
            return 7

        return s.transaction_sync(lambda: s.transaction_sync(inner))

    assert await sql(stub, nested) == 7
    assert await stub.bodies() == ["outer", "nested"]

    async def not_sync() -> None:
        pass

    with pytest.raises(TypeError, match="plain function"):
        await sql(stub, lambda s: s.transaction_sync(not_sync))  # type: ignore[arg-type, return-value]


async def test_objects_never_see_each_other(roost_env: roost.Env) -> None:
    a, b = roost_env.NOTES.get_by_name("a"), roost_env.NOTES.get_by_name("b")
    await a.add("for a")
    await b.add("for b")
    assert await a.bodies() == ["for a"]
    assert await b.bodies() == ["for b"]
    ids = {i.hex for i in list_object_ids(roost_env.NOTES)}
    assert ids == {a.id.hex, b.id.hex}


async def test_delete_all_empties_the_database(roost_env: roost.Env) -> None:
    stub = roost_env.NOTES.get_by_name("a")
    await stub.add_with_kv("x")

    async def wipe(obj: roost.DurableObject, ctx: roost.ObjectState) -> Any:
        await ctx.storage.delete_all()
        return ctx.storage.sql.exec("SELECT name FROM sqlite_master WHERE name = 'notes'").to_list()

    assert await run_in_object(stub, wipe) == []
    assert await run_in_object(stub, lambda obj, ctx: ctx.storage.get("last")) is None


async def test_failed_commit_of_mixed_batch_leaves_neither(
    roost_runtime: roost.Runtime, roost_runtime_factory: Factory, roost_data_dir: Path | None
) -> None:
    stub = roost_runtime.env.NOTES.get_by_name("a")
    await stub.add_with_kv("durable")
    with fail_commits(stub) as refused, pytest.raises(CommitFailed):
        await stub.add_with_kv("lost")
    assert len(refused) == 1
    assert refused[0].sql and refused[0].writes
    # A fresh instance sees neither the SQL row nor the KV write of that batch.
    assert await stub.bodies() == ["durable"]
    assert await run_in_object(stub, lambda obj, ctx: ctx.storage.get("last")) == "durable"
    if roost_data_dir is not None:
        await roost_runtime.close()
        runtime = await roost_runtime_factory(data_dir=roost_data_dir)
        again = runtime.env.NOTES.get_by_name("a")
        assert await again.bodies() == ["durable"]


async def test_sql_and_kv_survive_a_restart(roost_runtime_factory: Factory, tmp_path: Path) -> None:
    first = await roost_runtime_factory(data_dir=tmp_path / "d")
    await first.env.NOTES.get_by_name("a").add_with_kv("kept")
    await first.close()
    second = await roost_runtime_factory(data_dir=tmp_path / "d")
    stub = second.env.NOTES.get_by_name("a")
    assert await stub.bodies() == ["kept"]
    assert await run_in_object(stub, lambda obj, ctx: ctx.storage.get("last")) == "kept"


async def test_internal_statements_leave_no_mark_users_can_read(roost_env: roost.Env) -> None:
    stub = roost_env.NOTES.get_by_name("a")
    schema = await stub.run("SELECT name, sql FROM sqlite_master")
    assert {"_roost_kv", "_roost_alarm", "notes"} <= {r["name"] for r in schema}
    assert not any("roost " in (r["sql"] or "") for r in schema)


async def test_a_batch_that_wrote_nothing_settles_after_the_one_before_it() -> None:
    # The first batch waits for its fsync; the second changes nothing and needs
    # none, yet must not settle first (outputs wait on the latest batch only).
    loop = asyncio.get_running_loop()
    engine = MemoryEngine()
    engine.start(loop)
    synced: asyncio.Future[None] = loop.create_future()
    engine.after_commit = lambda namespace, object_id, db: synced  # type: ignore[method-assign]
    store = engine.open_object("NOTES", "ab" * 32, sql=True)
    first, second = CommitFuture(loop=loop), CommitFuture(loop=loop)
    store.commit(WriteBatch(writes={"k": b"\x01"}), first)
    store.commit(WriteBatch(writes={"absent": None}), second)
    await quiesce()
    assert not first.done() and not second.done()
    synced.set_result(None)
    await second
    assert first.done() and first.exception() is None
    await engine.close()
