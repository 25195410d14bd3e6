"""Random SQL row operations agree with a dict model, across runtime restarts."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import roost


class Table(roost.DurableObject, sql=True):
    def __init__(self, ctx: roost.ObjectState, env: roost.Env) -> None:
        super().__init__(ctx, env)
        ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS rows (k INTEGER PRIMARY KEY, v TEXT)")

    async def apply(self, op: tuple[Any, ...]) -> None:
        sql = self.ctx.storage.sql
        kind = op[0]
        if kind == "put":
            sql.exec("INSERT OR REPLACE INTO rows VALUES (?, ?)", op[1], op[2])
        elif kind == "delete":
            sql.exec("DELETE FROM rows WHERE k = ?", op[1])
        elif kind == "append":
            sql.exec("UPDATE rows SET v = v || ? WHERE k = ?", op[2], op[1])
        elif kind == "put_many":
            sql.transaction_sync(
                lambda: [
                    sql.exec("INSERT OR REPLACE INTO rows VALUES (?, ?)", k, v) for k, v in op[1]
                ]
            )

    async def rows(self) -> dict[int, str]:
        return {r[0]: r[1] for r in self.ctx.storage.sql.exec("SELECT k, v FROM rows").raw()}


keys = st.integers(0, 12)
texts = st.text(max_size=8)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), keys, texts),
        st.tuples(st.just("delete"), keys),
        st.tuples(st.just("append"), keys, texts),
        st.tuples(st.just("put_many"), st.lists(st.tuples(keys, texts), max_size=4)),
        st.tuples(st.just("restart")),
    ),
    max_size=25,
)


def apply_to_model(model: dict[int, str], op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "put":
        model[op[1]] = op[2]
    elif kind == "delete":
        model.pop(op[1], None)
    elif kind == "append" and op[1] in model:
        model[op[1]] += op[2]
    elif kind == "put_many":
        for k, v in op[1]:
            model[k] = v


async def run(ops: list[tuple[Any, ...]], data_dir: Path) -> None:
    model: dict[int, str] = {}
    runtime = roost.Runtime({"TABLE": Table}, data_dir=data_dir)
    await runtime.start()
    try:
        for op in ops:
            if op[0] == "restart":
                await runtime.close()
                runtime = roost.Runtime({"TABLE": Table}, data_dir=data_dir)
                await runtime.start()
                assert await runtime.env.TABLE.get_by_name("t").rows() == model
                continue
            await runtime.env.TABLE.get_by_name("t").apply(op)
            apply_to_model(model, op)
        await runtime.close()
        runtime = roost.Runtime({"TABLE": Table}, data_dir=data_dir)
        await runtime.start()
        assert await runtime.env.TABLE.get_by_name("t").rows() == model
    finally:
        await runtime.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_sql_rows_agree_with_a_model_across_restarts(ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(ops, Path(tmp)))
