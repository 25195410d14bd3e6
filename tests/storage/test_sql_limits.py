"""Limits on SQL objects' statements and databases (roost.storage.sqllimits)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import roost
from roost import SqlError, SqlLimits, SqlTimeout, StorageLimitExceeded
from roost.testing import run_in_object

Factory = Callable[..., Awaitable[roost.Runtime]]

RUNAWAY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
RUNAWAY_INSERT = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
    "INSERT INTO notes (body) SELECT 'x' FROM c"
)
#: Tiny limits, so that each refusal takes milliseconds.
TINY = SqlLimits(statement_timeout=0.05, max_database_bytes=64 * 1024, max_row_bytes=10_000)


class Notes(roost.DurableObject, sql=True):
    def __init__(self, ctx: roost.ObjectState, env: roost.Env) -> None:
        super().__init__(ctx, env)
        ctx.storage.sql.exec(
            "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)"
        )

    async def add(self, body: str) -> None:
        self.ctx.storage.sql.exec("INSERT INTO notes (body) VALUES (?)", body)

    async def count(self) -> int:
        return int(self.ctx.storage.sql.exec("SELECT count(*) AS n FROM notes").one()["n"])

    async def run(self, query: str, *params: Any) -> list[dict[str, Any]]:
        return self.ctx.storage.sql.exec(query, *params).to_list()


@pytest.fixture(params=["memory", "sqlite"])
def roost_data_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path | None:
    return None if request.param == "memory" else tmp_path / "data"


@pytest.fixture
def roost_objects() -> dict[str, type[roost.DurableObject]]:
    return {"NOTES": Notes}


async def test_a_runaway_read_times_out_and_the_batch_goes_on(
    roost_runtime_factory: Factory,
) -> None:
    runtime = await roost_runtime_factory(sql_limits=TINY)
    stub = runtime.env.NOTES.get_by_name("a")
    await stub.add("acknowledged")

    def work(obj: Any, ctx: roost.ObjectState) -> str:
        sql = ctx.storage.sql
        sql.exec("INSERT INTO notes (body) VALUES ('same batch')")
        started = time.monotonic()
        with pytest.raises(SqlTimeout, match="time limit of 0.05 s") as caught:
            sql.exec(RUNAWAY)
        assert time.monotonic() - started < 1.0
        # A read that timed out changed nothing: the batch's earlier write stays.
        sql.exec("INSERT INTO notes (body) VALUES ('after')")
        return str(caught.value)

    message = await run_in_object(stub, work)
    assert "SqlLimits.statement_timeout" in message
    rows = await stub.run("SELECT body FROM notes ORDER BY id")
    assert [r["body"] for r in rows] == ["acknowledged", "same batch", "after"]


async def test_a_runaway_write_times_out_resets_the_object_and_keeps_what_was_acknowledged(
    roost_runtime_factory: Factory,
) -> None:
    runtime = await roost_runtime_factory(sql_limits=SqlLimits(statement_timeout=0.05))
    stub = runtime.env.NOTES.get_by_name("a")
    await stub.add("acknowledged")
    started = time.monotonic()
    with pytest.raises(SqlTimeout, match="time limit"):
        await stub.run(RUNAWAY_INSERT)
    assert time.monotonic() - started < 1.0
    # SQLite rolled back the whole open transaction, which held nothing else.
    assert await stub.count() == 1
    await stub.add("later")
    assert await stub.count() == 2


async def test_a_runaway_write_after_other_writes_resets_the_object(
    roost_runtime_factory: Factory,
) -> None:
    runtime = await roost_runtime_factory(sql_limits=SqlLimits(statement_timeout=0.05))
    stub = runtime.env.NOTES.get_by_name("a")
    await stub.add("acknowledged")

    def work(obj: Any, ctx: roost.ObjectState) -> None:
        ctx.storage.sql.exec("INSERT INTO notes (body) VALUES ('not acknowledged')")
        ctx.storage.sql.exec(RUNAWAY_INSERT)

    with pytest.raises(SqlTimeout, match="undid the object's writes since its last commit"):
        await run_in_object(stub, work)
    # The object was reset: the rolled-back write is gone, the acknowledged one is not.
    rows = await stub.run("SELECT body FROM notes")
    assert rows == [{"body": "acknowledged"}]


async def test_a_value_over_the_row_limit_is_refused_at_once(
    roost_runtime_factory: Factory,
) -> None:
    runtime = await roost_runtime_factory(sql_limits=TINY)
    stub = runtime.env.NOTES.get_by_name("a")
    await stub.add("acknowledged")
    started = time.monotonic()
    with pytest.raises(StorageLimitExceeded, match="10000-byte limit"):
        await stub.run("INSERT INTO notes (body) VALUES (zeroblob(950000000))")
    with pytest.raises(StorageLimitExceeded, match="SqlLimits.max_row_bytes"):
        await stub.run("INSERT INTO notes (body) VALUES (?)", "x" * 20_000)
    assert time.monotonic() - started < 1.0
    await stub.add("small")
    assert await stub.count() == 2


async def test_the_database_size_limit_refuses_writes_and_keeps_the_object_usable(
    roost_runtime_factory: Factory,
) -> None:
    runtime = await roost_runtime_factory(sql_limits=TINY)
    stub = runtime.env.NOTES.get_by_name("a")
    written = 0
    with pytest.raises(StorageLimitExceeded, match="size limit of 65536 bytes"):
        for _ in range(100):
            await stub.add("y" * 4000)
            written += 1
    assert 0 < written < 20
    assert await stub.count() == written  # every acknowledged row is there
    # Freeing space lets writes go on.
    await stub.run("DELETE FROM notes WHERE id IN (SELECT id FROM notes LIMIT 3)")
    await stub.add("y" * 4000)
    assert await stub.count() == written - 2


async def test_a_statement_that_grows_past_the_limit_undoes_only_itself(
    roost_runtime_factory: Factory,
) -> None:
    runtime = await roost_runtime_factory(sql_limits=TINY)
    stub = runtime.env.NOTES.get_by_name("a")

    def work(obj: Any, ctx: roost.ObjectState) -> int:
        sql = ctx.storage.sql
        sql.exec("INSERT INTO notes (body) VALUES ('kept')")
        with pytest.raises(StorageLimitExceeded):
            sql.exec(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 100)"
                " INSERT INTO notes (body) SELECT printf('%.4000c', 'z') FROM c"
            )
        return int(sql.exec("SELECT count(*) AS n FROM notes").one()["n"])

    assert await run_in_object(stub, work) == 1
    assert await stub.count() == 1


async def test_kv_values_of_a_sql_object_are_not_bound_by_the_sql_row_limit(
    roost_runtime_factory: Factory,
) -> None:
    limits = SqlLimits(max_row_bytes=1_000)
    runtime = await roost_runtime_factory(sql_limits=limits)
    stub = runtime.env.NOTES.get_by_name("a")

    async def put(obj: Any, ctx: roost.ObjectState) -> None:
        await ctx.storage.put("big", b"v" * 50_000)

    await run_in_object(stub, put)

    async def get(obj: Any, ctx: roost.ObjectState) -> int:
        return len(await ctx.storage.get("big"))

    assert await run_in_object(stub, get) == 50_000


async def test_nul_in_a_query_is_a_sql_error(roost_env: roost.Env) -> None:
    stub = roost_env.NOTES.get_by_name("a")
    with pytest.raises(SqlError, match=r"NUL character \(U\+0000\) at position 8"):
        await stub.run("SELECT 1\x00; DROP TABLE notes")
    assert await stub.count() == 0


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="statement_timeout"):
        SqlLimits(statement_timeout=0)
    with pytest.raises(ValueError, match="max_database_bytes"):
        SqlLimits(max_database_bytes=100)
    with pytest.raises(ValueError, match="max_row_bytes"):
        SqlLimits(max_row_bytes=0)
    assert SqlLimits(statement_timeout=None).statement_timeout is None


def test_a_runtime_with_its_own_engine_takes_no_sql_limits() -> None:
    with pytest.raises(ValueError, match="sql_limits"):
        roost.Runtime({"NOTES": Notes}, engine=roost.storage.MemoryEngine(), sql_limits=TINY)
