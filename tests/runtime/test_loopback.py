"""The loopback router carries events as bytes, as a router to another process
must; the rest of the contract suite runs through it with ``--router=loopback``."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

import roost
from roost import codec
from roost.ids import ObjectId
from roost.runtime import LoopbackRouter, wire
from tests.conftest import quiesce

CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="none")
GATE: dict[str, asyncio.Event] = {}


class Probe(roost.DurableObject):
    async def seen_context(self) -> str:
        return CALLER.get()

    async def ident(self) -> tuple[str, str | None]:
        return self.ctx.id.hex, self.ctx.id.name

    async def slow_put(self, gate: str) -> None:
        await GATE[gate].wait()
        await self.ctx.storage.put("done", True)

    async def done(self) -> bool:
        return bool(await self.ctx.storage.get("done"))

    async def fail(self) -> None:
        raise KeyError("missing")


def runtime(**options: object) -> roost.Runtime:
    return roost.Runtime({"P": Probe}, router=LoopbackRouter, **options)  # type: ignore[arg-type]


async def test_nothing_of_the_callers_context_reaches_the_object() -> None:
    async with runtime() as rt:
        CALLER.set("front code")
        assert await rt.env.P.get_by_name("a").seen_context() == "none"
    async with roost.Runtime({"P": Probe}, router=roost.runtime.LocalRouter) as rt:
        # The in-process router runs the event in the caller's task: a negative control.
        assert await rt.env.P.get_by_name("a").seen_context() == "front code"


async def test_the_object_sees_its_id_and_name_and_errors_come_back_remote() -> None:
    async with runtime() as rt:
        stub = rt.env.P.get_by_name("a")
        assert await stub.ident() == (stub.id.hex, "a")
        with pytest.raises(KeyError, match="missing") as caught:
            await stub.fail()
        assert isinstance(caught.value, roost.RemoteError)
        assert "in fail" in "".join(caught.value.__notes__)


async def test_an_id_that_lies_about_its_name_is_refused_by_the_owner() -> None:
    async with runtime() as rt:
        router = rt.router
        real = rt.env.P.id_from_name("a")
        lying = ObjectId(real.hex, "P", "b")
        with pytest.raises(roost.InvalidObjectId, match="not made from the name"):
            await router.call("P", lying, "ident", (), {})
        forged = ObjectId("0" * 64, "P")
        with pytest.raises(roost.InvalidObjectId):
            await router.call("P", forged, "ident", (), {})


async def test_a_caller_that_gives_up_does_not_stop_the_owners_event() -> None:
    GATE["g"] = asyncio.Event()
    async with runtime() as rt:
        stub = rt.env.P.get_by_name("slow")
        waiting = asyncio.create_task(stub.slow_put("g"))
        await quiesce()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        GATE["g"].set()
        # The event went on and its write committed, as with a remote owner.
        for _ in range(100):
            if await stub.done():
                break
            await asyncio.sleep(0.01)
        assert await stub.done()


async def test_messages_are_plain_bytes_of_the_codec() -> None:
    async with runtime() as rt:
        object_id = rt.env.P.id_from_name("a")
        frame = wire.encode_call("P", object_id, "ident", (1, [2]), {"k": "v"})
        assert codec.decode(frame) == [
            "call",
            "P",
            object_id.hex,
            "a",
            "ident",
            (1, [2]),
            {"k": "v"},
        ]
        with pytest.raises(roost.RoostError, match="WebSocket upgrade cannot cross"):
            request = roost.http.RequestMessage("GET", "http://x/", [], b"", None, object())  # type: ignore[arg-type]
            wire.encode_fetch("P", object_id, request)
