"""Hostile values: nesting the encoder cannot survive, strings with no UTF-8 form,
and values written by an older Roost that cannot be read back."""

from __future__ import annotations

import os
from typing import Any

import apsw
import cbor2
import pytest

import roost
from roost import codec


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


class Box(roost.DurableObject):
    async def put(self, key: str, value: Any) -> None:
        await self.ctx.storage.put(key, value)

    async def put_deep(self, depth: int) -> None:
        await self.ctx.storage.put("deep", _nested(depth))

    async def get(self, key: str) -> Any:
        return await self.ctx.storage.get(key)

    async def list(self) -> dict[str, Any]:
        return await self.ctx.storage.list()

    async def delete(self, key: str) -> bool:
        return await self.ctx.storage.delete(key)

    async def deep_result(self, depth: int) -> Any:
        return _nested(depth)

    async def echo(self, value: Any) -> Any:
        return value


@pytest.fixture
async def rt(data_dir: str) -> Any:
    async with roost.Runtime({"BOX": Box}, data_dir=data_dir) as runtime:
        yield runtime


async def test_the_deepest_allowed_value_round_trips(rt: roost.Runtime) -> None:
    stub = rt.env.BOX.get_by_name("x")
    await stub.put("deep", _nested(codec.MAX_NESTING))
    assert await stub.get("deep") == _nested(codec.MAX_NESTING)
    assert await stub.echo(_nested(codec.MAX_NESTING)) == _nested(codec.MAX_NESTING)


@pytest.mark.parametrize("depth", [codec.MAX_NESTING + 1, 500, 20_000])
async def test_a_value_nested_too_deeply_is_refused_on_put_and_nothing_is_written(
    rt: roost.Runtime, depth: int
) -> None:
    # 20,000 levels crashed the process inside the C encoder before the bound.
    stub = rt.env.BOX.get_by_name("x")
    await stub.put("kept", 1)
    with pytest.raises(ValueError, match=f"nested more than {codec.MAX_NESTING} levels"):
        await stub.put_deep(depth)
    assert await stub.list() == {"kept": 1}


async def test_a_value_nested_too_deeply_is_refused_as_an_argument_and_a_result(
    rt: roost.Runtime,
) -> None:
    stub = rt.env.BOX.get_by_name("x")
    with pytest.raises(ValueError, match="levels deep"):
        await stub.echo(_nested(20_000))
    with pytest.raises(ValueError, match="levels deep"):
        await stub.deep_result(20_000)
    assert await stub.echo([1]) == [1]  # the object still serves


async def test_nesting_through_dicts_tuples_and_sets_counts_too(rt: roost.Runtime) -> None:
    value: Any = 1
    for level in range(codec.MAX_NESTING + 1):
        value = ({"k": value},) if level % 2 else {(1, 2): [value]}
    with pytest.raises(ValueError, match="levels deep"):
        codec.encode(value)
    key_nested: Any = ()
    for _ in range(codec.MAX_NESTING + 1):
        key_nested = (key_nested,)
    with pytest.raises(ValueError, match="levels deep"):
        codec.encode({key_nested: 1})


async def test_a_value_that_contains_itself_is_refused(rt: roost.Runtime) -> None:
    loop: list[Any] = []
    loop.append(loop)
    loop.append(loop)  # shared twice: must not make the check exponential
    with pytest.raises(ValueError, match="contains itself"):
        await rt.env.BOX.get_by_name("x").put("loop", loop)


async def test_a_lone_surrogate_is_refused_with_a_message(rt: roost.Runtime) -> None:
    stub = rt.env.BOX.get_by_name("x")
    for value in ("a\ud800b", ["ok", "\udfff"], {"\ud800": 1}):
        with pytest.raises(ValueError, match="not valid Unicode: surrogates not allowed"):
            await stub.put("s", value)
    assert await stub.list() == {}


async def test_a_stored_value_that_cannot_be_decoded_is_a_storage_error_and_deletable(
    data_dir: str,
) -> None:
    """Values 401+ levels deep were accepted before the bound and can never be
    read back: they surface as StorageError naming the key, and delete() works."""
    async with roost.Runtime({"BOX": Box}, data_dir=data_dir) as rt:
        stub = rt.env.BOX.get_by_name("x")
        await stub.put("poisoned", 0)
        await stub.put("fine", 2)
    poison = bytes([codec.FORMAT_VERSION]) + cbor2.dumps(_nested(1_000))
    db = apsw.Connection(os.path.join(data_dir, "objects.sqlite3"))
    with db:
        db.execute("UPDATE kv SET value = ? WHERE key = 'poisoned'", (poison,))
    assert db.changes() == 1
    db.close()
    async with roost.Runtime({"BOX": Box}, data_dir=data_dir) as rt:
        stub = rt.env.BOX.get_by_name("x")
        with pytest.raises(roost.StorageError, match="'poisoned' cannot be read"):
            await stub.get("poisoned")
        with pytest.raises(roost.StorageError, match="'poisoned' cannot be read"):
            await stub.list()
        assert await stub.get("fine") == 2
        assert await stub.delete("poisoned")
        assert await stub.list() == {"fine": 2}
