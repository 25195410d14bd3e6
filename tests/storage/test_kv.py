"""The KV API's edges: limits, refusals that write nothing, value types, transactions."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest

import roost
from roost.storage import StorageLimits


class Box(roost.DurableObject):
    async def call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        return await getattr(self.ctx.storage, op)(*args, **kwargs)

    async def put_unstorable(self) -> None:
        await self.ctx.storage.put("ok", 1)
        await self.ctx.storage.put({"fine": 1, "bad": object()})

    async def mutate_after_put(self) -> Any:
        value = {"list": [1]}
        await self.ctx.storage.put("v", value)
        value["list"].append(2)
        got = await self.ctx.storage.get("v")
        got["list"].append(3)
        return await self.ctx.storage.get("v")

    async def txn_then_outside(self) -> Any:
        async def body(txn: roost.Transaction) -> None:
            await txn.put("a", 1)
            assert await self.ctx.storage.get("a") is None  # not visible outside yet
            await txn.delete_all()
            assert await txn.get("z") is None
            await txn.put("b", 2)

        await self.ctx.storage.put("z", 26)
        await self.ctx.storage.transaction(body)
        return await self.ctx.storage.list()

    async def public_names(self) -> dict[str, list[str]]:
        names: dict[str, list[str]] = {"storage": _public(self.ctx.storage)}

        async def body(txn: roost.Transaction) -> None:
            names["transaction"] = _public(txn)

        await self.ctx.storage.transaction(body)
        return names


def _public(obj: object) -> list[str]:
    return sorted(n for n in dir(obj) if not n.startswith("_"))


@pytest.fixture
async def rt(data_dir: str) -> Any:
    limits = StorageLimits(max_key_bytes=16, max_value_bytes=64)
    async with roost.Runtime({"BOX": Box}, data_dir=data_dir, limits=limits) as runtime:
        yield runtime


VALUES: list[Any] = [
    None,
    True,
    2**100,
    -3.5,
    "text",
    b"\x00bytes",
    [1, [2]],
    (1, "t"),
    {"k": {1: (2,)}},
    {1, 2},
    dt.datetime(2021, 5, 6, 7, 8, 9),
    dt.datetime(2021, 5, 6, tzinfo=dt.UTC),
    Decimal("1.10"),
    uuid.UUID(int=7),
]


async def test_every_value_type_round_trips_through_storage_and_a_restart(
    data_dir: str,
) -> None:
    async with roost.Runtime({"BOX": Box}, data_dir=data_dir) as rt:
        stub = rt.env.BOX.get_by_name("v")
        await stub.call("put", {f"k{i}": v for i, v in enumerate(VALUES)})
        for i, value in enumerate(VALUES):
            got = await stub.call("get", f"k{i}")
            assert got == value and type(got) is type(value)
    async with roost.Runtime({"BOX": Box}, data_dir=data_dir) as rt:
        stub = rt.env.BOX.get_by_name("v")
        stored = await stub.call("list")
        assert [stored[f"k{i}"] for i in range(len(VALUES))] == VALUES
        assert [type(stored[f"k{i}"]) for i in range(len(VALUES))] == [type(v) for v in VALUES]


async def test_an_unstorable_value_is_refused_naming_its_type_and_nothing_is_written(
    rt: roost.Runtime,
) -> None:
    stub = rt.env.BOX.get_by_name("x")
    with pytest.raises(TypeError, match="'object'") as info:
        await stub.put_unstorable()
    assert info.value.remote  # raised inside the object, re-raised here
    # The first put (before the refused one) stands; nothing of the refused dict does.
    assert await stub.call("list") == {"ok": 1}


async def test_keys_over_the_limit_are_refused(rt: roost.Runtime) -> None:
    stub = rt.env.BOX.get_by_name("x")
    with pytest.raises(roost.StorageLimitExceeded, match="exceeds the limit of 16 bytes"):
        await stub.call("put", "k" * 17, 1)
    with pytest.raises(roost.StorageLimitExceeded):
        await stub.call("put", "é" * 9, 1)  # 18 bytes of UTF-8
    await stub.call("put", "k" * 16, 1)
    assert await stub.call("list") == {"k" * 16: 1}


async def test_values_over_the_limit_are_refused_and_nothing_of_the_batch_is_written(
    rt: roost.Runtime,
) -> None:
    stub = rt.env.BOX.get_by_name("x")
    with pytest.raises(roost.StorageLimitExceeded, match="over the limit of 64 bytes") as info:
        await stub.call("put", {"small": 1, "big": "x" * 100})
    assert isinstance(info.value, ValueError)
    assert await stub.call("list") == {}


async def test_bad_keys_and_arguments_get_clear_errors(rt: roost.Runtime) -> None:
    stub = rt.env.BOX.get_by_name("x")
    with pytest.raises(TypeError, match="takes a str key or a dict, not int"):
        await stub.call("put", 1, 1)
    with pytest.raises(TypeError, match="keys are str"):
        await stub.call("get", [1])
    with pytest.raises(ValueError, match="not both"):
        await stub.call("list", start="a", start_after="b")
    with pytest.raises(ValueError, match="positive int"):
        await stub.call("list", limit=0)


async def test_values_are_copies_on_put_and_get(rt: roost.Runtime) -> None:
    stub = rt.env.BOX.get_by_name("x")
    assert await stub.mutate_after_put() == {"list": [1]}


async def test_delete_reports_what_existed(rt: roost.Runtime) -> None:
    stub = rt.env.BOX.get_by_name("x")
    await stub.call("put", {"a": 1, "b": 2})
    assert await stub.call("delete", "a") is True
    assert await stub.call("delete", "a") is False
    assert await stub.call("delete", ["a", "b", "c"]) == 1


async def test_transaction_writes_are_private_until_it_returns(rt: roost.Runtime) -> None:
    stub = rt.env.BOX.get_by_name("x")
    assert await stub.txn_then_outside() == {"b": 2}


async def test_list_options(rt: roost.Runtime) -> None:
    stub = rt.env.BOX.get_by_name("x")
    await stub.call("put", {k: i for i, k in enumerate(["a", "ab", "abc", "b", "ba", "c"])})
    assert list(await stub.call("list", prefix="ab")) == ["ab", "abc"]
    assert list(await stub.call("list", start="ab", end="b")) == ["ab", "abc"]
    assert list(await stub.call("list", start_after="ab", limit=2)) == ["abc", "b"]
    assert list(await stub.call("list", reverse=True, limit=2)) == ["c", "ba"]
    assert list(await stub.call("list", prefix="b", reverse=True)) == ["ba", "b"]


class Unawaited(roost.DurableObject):
    async def write(self) -> None:
        # As in Cloudflare, a write takes effect whether or not it is awaited;
        # the output gate still holds this method's result until it is durable.
        self.ctx.storage.put("a", 1)
        self.ctx.storage.put({"b": 2, "c": 3})
        self.ctx.storage.delete("c")

    async def read(self) -> Any:
        return await self.ctx.storage.list()

    async def bad_write(self) -> None:
        self.ctx.storage.put("x", object())  # refused at the call, awaited or not


async def test_writes_need_no_await_and_survive_a_restart(data_dir: str) -> None:
    async with roost.Runtime({"U": Unawaited}, data_dir=data_dir) as rt:
        await rt.env.U.get_by_name("u").write()
        with pytest.raises(TypeError, match="'object'"):
            await rt.env.U.get_by_name("u").bad_write()
    async with roost.Runtime({"U": Unawaited}, data_dir=data_dir) as rt:
        assert await rt.env.U.get_by_name("u").read() == {"a": 1, "b": 2}


async def test_a_data_directory_serves_one_process_at_a_time(data_dir: str) -> None:
    async with roost.Runtime({"U": Unawaited}, data_dir=data_dir) as rt:
        await rt.env.U.get_by_name("u").write()
        other = roost.Runtime({"U": Unawaited}, data_dir=data_dir)
        with pytest.raises(roost.StorageError, match="in use by another Roost process"):
            await other.start()
    # Once the first has closed, the directory is free again.
    async with roost.Runtime({"U": Unawaited}, data_dir=data_dir) as rt:
        assert await rt.env.U.get_by_name("u").read() == {"a": 1, "b": 2}


# The documented KV API (docs/guide.md, docs/alarms.md, docs/storage.md).  The
# runtime's members (the output barrier, close, the alarm bookkeeping) are
# private: an object that called them would break itself.
KV_API = {
    "get", "put", "delete", "delete_all", "list", "transaction",
    "get_alarm", "set_alarm", "delete_alarm",
}  # fmt: skip


async def test_ctx_storage_shows_objects_only_the_documented_api(rt: roost.Runtime) -> None:
    names = await rt.env.BOX.get_by_name("x").public_names()
    assert set(names["storage"]) == KV_API | {"sync", "sql"}
    assert set(names["transaction"]) == KV_API | {"rollback"}
