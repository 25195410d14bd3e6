"""The KV API against a plain dict, through random operation sequences.

A hypothesis state machine drives one object's storage (single puts/gets/deletes,
batches, ``list`` with every option, ``delete_all``, transactions that raise or
roll back) and restarts the whole runtime on the same ``data_dir`` in between.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

import roost
from roost.runtime import ManualClock
from tests.storage.shared_file import stored


class KvObject(roost.DurableObject):
    async def call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        return await getattr(self.ctx.storage, op)(*args, **kwargs)

    async def script(self, steps: list[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> list[Any]:
        # Several operations in one event: later ones see earlier ones before
        # they are durable (the cache and overlay paths, not the database).
        return [await getattr(self.ctx.storage, op)(*args, **kw) for op, args, kw in steps]

    async def txn(self, writes: dict[str, Any], deletes: list[str], how: str) -> Any:
        async def body(txn: roost.Transaction) -> str:
            for key, value in writes.items():
                await txn.put(key, value)
            await txn.delete(deletes)
            for key, value in writes.items():
                if key not in deletes:
                    assert await txn.get(key) == value  # read-your-writes inside
            if how == "raise":
                raise RuntimeError("abort this transaction")
            if how == "rollback":
                txn.rollback()
            return "done"

        try:
            return await self.ctx.storage.transaction(body)
        except RuntimeError as exc:
            return str(exc)


keys = st.text(alphabet="abé", min_size=1, max_size=2)
values = st.one_of(
    st.integers(),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=3),
    st.none(),
    # Around the size past which a value is stored out of its row.
    st.binary(min_size=100, max_size=300),
)


class KvModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = tempfile.mkdtemp(prefix="roost-kv-model-")
        self.model: dict[str, Any] = {}
        self.clock = ManualClock()
        self.runtime = self._open()

    def _open(self) -> roost.Runtime:
        rt = roost.Runtime({"KV": KvObject}, data_dir=self.dir, clock=self.clock)
        self.loop.run_until_complete(rt.start())
        return rt

    def run(self, op: str, *args: Any, **kwargs: Any) -> Any:
        stub = self.runtime.env.KV.get_by_name("subject")
        return self.loop.run_until_complete(stub.call(op, *args, **kwargs))

    def teardown(self) -> None:
        self.loop.run_until_complete(self.runtime.close())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(key=keys, value=values)
    def put(self, key: str, value: Any) -> None:
        self.run("put", key, value)
        self.model[key] = value

    @rule(entries=st.dictionaries(keys, values, max_size=5))
    def put_many(self, entries: dict[str, Any]) -> None:
        self.run("put", entries)
        self.model.update(entries)

    @rule(key=keys)
    def get(self, key: str) -> None:
        assert self.run("get", key) == self.model.get(key)

    @rule(some=st.lists(keys, max_size=5))
    def get_many(self, some: list[str]) -> None:
        expected = {k: self.model[k] for k in some if k in self.model}
        assert self.run("get", some) == expected

    @rule(key=keys)
    def delete(self, key: str) -> None:
        assert self.run("delete", key) == (key in self.model)
        self.model.pop(key, None)

    @rule(some=st.lists(keys, max_size=5, unique=True))
    def delete_many(self, some: list[str]) -> None:
        assert self.run("delete", some) == sum(1 for k in some if k in self.model)
        for k in some:
            self.model.pop(k, None)

    @rule()
    def delete_all(self) -> None:
        self.run("delete_all")
        self.model.clear()

    @rule(
        start=st.none() | keys,
        after=st.booleans(),
        end=st.none() | keys,
        prefix=st.none() | st.text(alphabet="abé", max_size=2),
        reverse=st.booleans(),
        limit=st.none() | st.integers(1, 6),
    )
    def list(
        self,
        start: str | None,
        after: bool,
        end: str | None,
        prefix: str | None,
        reverse: bool,
        limit: int | None,
    ) -> None:
        options: dict[str, Any] = {"end": end, "prefix": prefix, "reverse": reverse, "limit": limit}
        options["start_after" if after else "start"] = start
        chosen = [
            k
            for k in sorted(self.model, reverse=reverse)
            if (start is None or (k > start if after else k >= start))
            and (end is None or k < end)
            and (prefix is None or k.startswith(prefix))
        ]
        if limit is not None:
            chosen = chosen[:limit]
        got = self.run("list", **options)
        assert list(got) == chosen
        assert got == {k: self.model[k] for k in chosen}

    @rule(
        writes=st.dictionaries(keys, values, max_size=4),
        deletes=st.lists(keys, max_size=3, unique=True),
        how=st.sampled_from(["commit", "raise", "rollback"]),
    )
    def transaction(self, writes: dict[str, Any], deletes: list[str], how: str) -> None:
        stub = self.runtime.env.KV.get_by_name("subject")
        result = self.loop.run_until_complete(stub.txn(writes, deletes, how))
        if how == "commit":
            assert result == "done"
            self.model.update(writes)
            for k in deletes:
                self.model.pop(k, None)

    @rule(
        writes=st.lists(st.tuples(keys, st.none() | values), max_size=5),
        limit=st.integers(1, 4),
        reverse=st.booleans(),
    )
    def writes_then_list_in_one_event(
        self, writes: list[tuple[str, Any]], limit: int, reverse: bool
    ) -> None:
        steps: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        for key, value in writes:
            # None stands for "delete" here.
            steps.append(("delete", (key,), {}) if value is None else ("put", (key, value), {}))
            if value is None:
                self.model.pop(key, None)
            else:
                self.model[key] = value
        steps.append(("list", (), {"limit": limit, "reverse": reverse}))
        stub = self.runtime.env.KV.get_by_name("subject")
        listing = self.loop.run_until_complete(stub.script(steps))[-1]
        expected = sorted(self.model, reverse=reverse)[:limit]
        assert list(listing) == expected

    @rule()
    def restart(self) -> None:
        self.loop.run_until_complete(self.runtime.close())
        large, pointers, _ = stored(self.dir)
        assert large == pointers  # every large value is referenced: none leaked
        self.runtime = self._open()

    @rule()
    def evict(self) -> None:
        self.loop.run_until_complete(self.clock.advance(60))
        assert self.runtime.statistics().live_objects == 0

    @rule()
    def full_listing_matches(self) -> None:
        assert self.run("list") == dict(sorted(self.model.items()))


KvModel.TestCase.settings = settings(max_examples=80, stateful_step_count=25, deadline=None)
test_kv_api_matches_a_dict = KvModel.TestCase
