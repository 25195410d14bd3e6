"""One test (at least) for each rule of the consistency contract (docs/consistency.md).

Each test is written so that it fails when its rule is broken.
"""

from __future__ import annotations

import asyncio
from collections import Counter as Tally
from typing import Any

import pytest

import roost
from roost.runtime import ManualClock
from roost.storage.engine import ObjectStore, WriteBatch
from tests.conftest import BlockingCommits, quiesce

constructed: Tally[str] = Tally()


class Counter(roost.DurableObject):
    def __init__(self, ctx: roost.ObjectState, env: roost.Env) -> None:
        super().__init__(ctx, env)
        constructed[ctx.id.hex] += 1
        self.in_memory = 0

    async def increment(self, by: int = 1) -> int:
        value = (await self.ctx.storage.get("value") or 0) + by
        await self.ctx.storage.put("value", value)
        self.in_memory += by
        return value

    async def read(self) -> Any:
        return await self.ctx.storage.get("value")

    async def traced_increment(self) -> int:
        seen = await self.ctx.storage.get("value") or 0
        TRACE.append(("read", seen))
        await self.ctx.storage.put("value", seen + 1)
        return seen + 1

    async def memory(self) -> int:
        return self.in_memory

    async def slow_increment(self, gate: str) -> int:
        value = await self.ctx.storage.get("value") or 0
        await GATES[gate].wait()  # an outside await: others may interleave here
        await self.ctx.storage.put("value", value + 1)
        return value + 1

    async def many_storage_ops(self, n: int) -> list[str]:
        trace = []
        for i in range(n):
            await self.ctx.storage.put(f"k{i}", i)
            await self.ctx.storage.get(f"k{i}")
            trace.append(f"op{i}")
            TRACE.append(("storage", i))
        return trace

    async def mark(self) -> None:
        TRACE.append(("mark", -1))

    async def put_two(self, a: str, b: str) -> None:
        await self.ctx.storage.put(a, 1)
        await self.ctx.storage.put(b, 2)

    async def put_then_outside_then_put(self, a: str, b: str) -> None:
        await self.ctx.storage.put(a, 1)
        # An outside await: the engine seals the first batch on this loop turn,
        # before the event resumes.
        await asyncio.sleep(0)
        await self.ctx.storage.put(b, 2)

    async def hold(self, gate: str) -> None:
        await self.ctx.block_concurrency_while(GATES[gate].wait())


GATES: dict[str, asyncio.Event] = {}
TRACE: list[tuple[str, int]] = []


@pytest.fixture(autouse=True)
def _reset_globals() -> None:
    constructed.clear()
    GATES.clear()
    TRACE.clear()


# -- rule 1: single instance -----------------------------------------------------


async def test_100_callers_at_once_construct_each_of_10_cold_objects_once() -> None:
    async with roost.Runtime({"COUNTER": Counter}) as rt:
        start = asyncio.Event()

        async def caller(i: int) -> int:
            await start.wait()
            return await rt.env.COUNTER.get_by_name(f"obj{i % 10}").increment()

        calls = [asyncio.create_task(caller(i)) for i in range(100)]
        await asyncio.sleep(0)
        start.set()
        results = await asyncio.gather(*calls)
        assert len(constructed) == 10
        assert set(constructed.values()) == {1}
        assert sorted(results) == sorted(list(range(1, 11)) * 10)


# -- rule 2: serial events and the input gate -----------------------------------


async def test_1000_concurrent_increments_end_at_exactly_1000(data_dir: str) -> None:
    async with roost.Runtime({"COUNTER": Counter}, data_dir=data_dir) as rt:
        stub = rt.env.COUNTER.get_by_name("hot")
        results = await asyncio.gather(*(stub.increment() for _ in range(1000)))
        assert sorted(results) == list(range(1, 1001))
        assert await stub.read() == 1000
    async with roost.Runtime({"COUNTER": Counter}, data_dir=data_dir) as rt:
        assert await rt.env.COUNTER.get_by_name("hot").read() == 1000


async def test_an_outside_await_lets_another_event_interleave() -> None:
    async with roost.Runtime({"COUNTER": Counter}) as rt:
        stub = rt.env.COUNTER.get_by_name("x")
        GATES["g"] = asyncio.Event()
        slow = asyncio.create_task(stub.slow_increment("g"))
        await quiesce()
        # The slow event is parked on an outside await; another event runs now.
        assert await asyncio.wait_for(stub.increment(10), 1) == 10
        GATES["g"].set()
        # The slow event read 0 before the interleaving write: a lost update,
        # which is what an outside await allows (and why it is worth knowing).
        assert await slow == 1


async def test_a_storage_await_does_not_let_another_event_interleave(data_dir: str) -> None:
    async with roost.Runtime({"COUNTER": Counter}, data_dir=data_dir) as rt:
        stub = rt.env.COUNTER.get_by_name("x")
        work = asyncio.create_task(stub.many_storage_ops(200))
        await asyncio.sleep(0)
        marks = [asyncio.create_task(stub.mark()) for _ in range(20)]
        await asyncio.gather(work, *marks)
        kinds = [kind for kind, _ in TRACE]
        first_mark = kinds.index("mark")
        # All 200 storage steps of the first event happened before any other event.
        assert kinds[:first_mark] == ["storage"] * 200
        assert kinds[first_mark:] == ["mark"] * 20


async def test_block_concurrency_while_holds_every_other_event() -> None:
    async with roost.Runtime({"COUNTER": Counter}) as rt:
        stub = rt.env.COUNTER.get_by_name("x")
        GATES["g"] = asyncio.Event()
        holder = asyncio.create_task(stub.hold("g"))
        await quiesce()
        blocked = asyncio.create_task(stub.increment())
        await quiesce()
        assert not blocked.done(), "an event ran while block_concurrency_while was running"
        GATES["g"].set()
        await holder
        assert await asyncio.wait_for(blocked, 1) == 1


class LoadsFirst(roost.DurableObject):
    def __init__(self, ctx: roost.ObjectState, env: roost.Env) -> None:
        super().__init__(ctx, env)
        self.loaded: Any = None
        ctx.block_concurrency_while(self._load())

    async def _load(self) -> None:
        await GATES["load"].wait()  # an outside await the test controls
        self.loaded = await self.ctx.storage.get("v") or "default"

    async def value(self) -> Any:
        return self.loaded


async def test_block_concurrency_while_in_the_constructor_runs_before_any_event() -> None:
    GATES["load"] = asyncio.Event()
    async with roost.Runtime({"L": LoadsFirst}) as rt:
        calls = [asyncio.create_task(rt.env.L.get_by_name("a").value()) for _ in range(5)]
        await quiesce()
        assert not any(call.done() for call in calls), "an event ran before the load finished"
        GATES["load"].set()
        assert await asyncio.gather(*calls) == ["default"] * 5


# -- rule 3: write coalescing ----------------------------------------------------


def fail_batches_writing(key: str) -> Any:
    def hook(store: ObjectStore, batch: WriteBatch) -> None:
        if key in batch.writes:
            raise OSError(f"injected failure writing {key}")

    return hook


@pytest.mark.parametrize("durable", [True, False], ids=["sqlite", "memory"])
async def test_writes_without_an_outside_await_commit_together_or_not_at_all(
    durable: bool, data_dir: str
) -> None:
    async with roost.Runtime({"COUNTER": Counter}, data_dir=data_dir if durable else None) as rt:
        rt.engine.fault_hook = fail_batches_writing("b")
        stub = rt.env.COUNTER.get_by_name("x")
        with pytest.raises(roost.CommitFailed):
            await stub.put_two("a", "b")
        rt.engine.fault_hook = None
        # Neither write of the failed batch is visible, even "a" which was fine.
        probe = rt.env.COUNTER.get_by_name("x")
        assert await probe.read() is None
        store = rt.engine.open_object("COUNTER", stub.id.hex)
        assert store.read(["a", "b"]) == {}


async def test_an_outside_await_splits_writes_into_separate_batches(data_dir: str) -> None:
    async with roost.Runtime({"COUNTER": Counter}, data_dir=data_dir) as rt:
        rt.engine.fault_hook = fail_batches_writing("b")
        stub = rt.env.COUNTER.get_by_name("x")
        with pytest.raises(roost.CommitFailed):
            await stub.put_then_outside_then_put("a", "b")
        rt.engine.fault_hook = None
        store = rt.engine.open_object("COUNTER", stub.id.hex)
        assert set(store.read(["a", "b"])) == {"a"}


# -- rule 4: the output gate -----------------------------------------------------


async def test_a_result_is_held_until_its_writes_are_durable(data_dir: str) -> None:
    async with roost.Runtime({"COUNTER": Counter}, data_dir=data_dir) as rt:
        blocker = BlockingCommits.installed(rt)
        stub = rt.env.COUNTER.get_by_name("x")
        call = asyncio.create_task(stub.increment())
        await blocker.reached()
        await quiesce()
        assert not call.done(), "the result left before its write was durable"
        # The object goes on working meanwhile (and sees its own write)...
        second = asyncio.create_task(stub.increment())
        await quiesce()
        assert rt.statistics().pending_outputs == 2
        blocker.release.set()
        assert await call == 1
        assert await second == 2


async def test_a_read_of_undurable_state_is_held_too(data_dir: str) -> None:
    async with roost.Runtime({"COUNTER": Counter}, data_dir=data_dir) as rt:
        blocker = BlockingCommits.installed(rt)
        stub = rt.env.COUNTER.get_by_name("x")
        write = asyncio.create_task(stub.increment())
        await blocker.reached()
        read = asyncio.create_task(stub.read())
        await quiesce()
        assert not read.done(), "a read of an undurable write was released"
        blocker.release.set()
        assert (await write, await read) == (1, 1)


async def test_a_failed_commit_fails_the_caller_and_resets_the_object(data_dir: str) -> None:
    async with roost.Runtime({"COUNTER": Counter}, data_dir=data_dir) as rt:
        stub = rt.env.COUNTER.get_by_name("x")
        assert await stub.increment(5) == 5
        assert await stub.memory() == 5
        rt.engine.fault_hook = fail_batches_writing("value")
        with pytest.raises(roost.CommitFailed) as info:
            await stub.increment(100)
        assert info.value.retryable
        rt.engine.fault_hook = None
        # The instance was dropped: its in-memory state (and the unsaved 105) is gone.
        assert await stub.memory() == 0
        assert constructed[stub.id.hex] == 2
        assert await stub.read() == 5
        assert rt.statistics().resets == 1


async def test_held_outputs_of_a_failed_commit_all_fail(data_dir: str) -> None:
    async with roost.Runtime({"COUNTER": Counter}, data_dir=data_dir) as rt:
        stub = rt.env.COUNTER.get_by_name("x")

        def fail_all(store: ObjectStore, batch: WriteBatch) -> None:
            raise OSError("disk on fire")

        rt.engine.fault_hook = fail_all
        results = await asyncio.gather(
            *(stub.increment() for _ in range(20)), return_exceptions=True
        )
        assert all(isinstance(r, (roost.CommitFailed, roost.ObjectReset)) for r in results)
        rt.engine.fault_hook = None
        assert await stub.read() is None


# -- rule 6: read-your-writes ----------------------------------------------------


async def test_reads_see_earlier_writes_before_they_are_durable(data_dir: str) -> None:
    async with roost.Runtime({"COUNTER": Counter}, data_dir=data_dir) as rt:
        blocker = BlockingCommits.installed(rt)
        stub = rt.env.COUNTER.get_by_name("x")
        first = asyncio.create_task(stub.increment())
        await blocker.reached()  # 1 is written, not durable
        later = [asyncio.create_task(stub.traced_increment()) for _ in range(2)]
        await quiesce()
        # The later events already ran and read 1, then 2, from the object's
        # cache, while the first write is still waiting for the disk...
        assert TRACE == [("read", 1), ("read", 2)]
        assert rt.statistics().pending_outputs == 3  # ...and no result has left.
        assert not first.done()
        blocker.release.set()
        assert (await first, *await asyncio.gather(*later)) == (1, 2, 3)


# -- rule 7: eviction ------------------------------------------------------------


async def test_an_idle_object_is_evicted_and_recreated_with_its_storage() -> None:
    clock = ManualClock()
    async with roost.Runtime({"COUNTER": Counter}, clock=clock, idle_timeout=10) as rt:
        stub = rt.env.COUNTER.get_by_name("x")
        await stub.increment(3)
        assert rt.is_live("COUNTER", stub.id)
        await clock.advance(5)
        assert rt.is_live("COUNTER", stub.id), "evicted before the idle timeout"
        await clock.advance(6)
        assert not rt.is_live("COUNTER", stub.id)
        assert await stub.memory() == 0  # a new instance...
        assert constructed[stub.id.hex] == 2  # ...built by the constructor again
        assert await stub.read() == 3  # with its storage intact


async def test_a_busy_object_is_not_evicted() -> None:
    clock = ManualClock()
    # No call timeout: the call must outlive a whole minute of the manual clock.
    async with roost.Runtime(
        {"COUNTER": Counter}, clock=clock, idle_timeout=10, call_timeout=None
    ) as rt:
        stub = rt.env.COUNTER.get_by_name("x")
        GATES["g"] = asyncio.Event()
        busy = asyncio.create_task(stub.slow_increment("g"))
        await quiesce()
        await clock.advance(60)
        assert rt.is_live("COUNTER", stub.id)
        GATES["g"].set()
        await busy


async def test_the_sweep_evicts_exactly_the_objects_idle_past_the_timeout() -> None:
    # The sweep stops at the first object touched after the cutoff; objects
    # behind it, and an old one touched again, must come out right.
    clock = ManualClock()
    async with roost.Runtime({"COUNTER": Counter}, clock=clock, idle_timeout=10) as rt:
        ns = rt.env.COUNTER
        old = [ns.get_by_name(f"old{i}") for i in range(20)]
        for stub in old:
            await stub.increment()
        await clock.advance(4)
        recent = [ns.get_by_name(f"recent{i}") for i in range(20)]
        for stub in recent:
            await stub.increment()
        await old[7].increment()  # touched again: now as recent as the others
        await clock.advance(7)  # t=11: the old ones idle 11 s, the rest 7 s
        live = [rt.is_live("COUNTER", stub.id) for stub in old]
        assert live == [i == 7 for i in range(20)]
        assert all(rt.is_live("COUNTER", stub.id) for stub in recent)
        await clock.advance(4)  # t=15: everyone idle 11 s
        assert rt.statistics().live_objects == 0
        assert [await stub.read() for stub in old[6:9]] == [1, 2, 1]


async def test_the_sweep_sees_an_object_idle_just_past_the_timeout() -> None:
    clock = ManualClock()
    async with roost.Runtime({"COUNTER": Counter}, clock=clock, idle_timeout=10) as rt:
        first, second = rt.env.COUNTER.get_by_name("a"), rt.env.COUNTER.get_by_name("b")
        await clock.advance(0.5)
        await first.increment()  # t=0.5
        await clock.advance(0.2)
        await second.increment()  # t=0.7, same sweep epoch
        await clock.advance(9.9)  # t=10.6; the runtime's own sweeps ran at whole seconds
        assert rt.is_live("COUNTER", first.id) and rt.is_live("COUNTER", second.id)
        assert rt.evict_idle() == 1  # cutoff 0.6
        assert not rt.is_live("COUNTER", first.id)
        assert rt.is_live("COUNTER", second.id)


async def test_live_objects_are_capped_least_recently_used_first() -> None:
    async with roost.Runtime({"COUNTER": Counter}, max_live_objects=50) as rt:
        for i in range(200):
            await rt.env.COUNTER.get_by_name(f"o{i}").increment()
        assert rt.statistics().live_objects <= 50
        assert rt.is_live("COUNTER", rt.env.COUNTER.id_from_name("o199"))
        assert not rt.is_live("COUNTER", rt.env.COUNTER.id_from_name("o0"))
        assert await rt.env.COUNTER.get_by_name("o0").read() == 1


# -- rule 8: overload ------------------------------------------------------------


async def test_an_over_full_queue_answers_overloaded_at_once() -> None:
    async with roost.Runtime({"COUNTER": Counter}, max_queue=10) as rt:
        stub = rt.env.COUNTER.get_by_name("x")
        GATES["g"] = asyncio.Event()
        holder = asyncio.create_task(stub.hold("g"))
        await quiesce()
        queued = [asyncio.create_task(stub.increment()) for _ in range(9)]
        await quiesce()
        with pytest.raises(roost.ObjectOverloaded) as info:
            await asyncio.wait_for(stub.increment(), 0.5)
        assert info.value.overloaded and not info.value.remote
        GATES["g"].set()
        await holder
        assert sorted(await asyncio.gather(*queued)) == list(range(1, 10))
        # Once drained, the object takes calls again.
        assert await stub.increment() == 10


class Syncs(roost.DurableObject):
    async def write_and_sync(self) -> None:
        await self.ctx.storage.put("v", 1)
        await self.ctx.storage.sync()  # waits for the disk: a storage operation
        TRACE.append(("synced", 0))

    async def mark(self) -> None:
        TRACE.append(("mark", 0))


async def test_storage_sync_holds_other_events_like_any_storage_operation(
    data_dir: str,
) -> None:
    async with roost.Runtime({"S": Syncs}, data_dir=data_dir) as rt:
        blocker = BlockingCommits.installed(rt)
        stub = rt.env.S.get_by_name("x")
        writer = asyncio.create_task(stub.write_and_sync())
        await blocker.reached()
        marker = asyncio.create_task(stub.mark())
        await quiesce()
        assert TRACE == [], "another event ran while sync() waited for the disk"
        blocker.release.set()
        await asyncio.gather(writer, marker)
        assert TRACE == [("synced", 0), ("mark", 0)]
