"""The kernel's WebSocket handle without a server: a fake transport records what leaves."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from roost import (
    DurableObject,
    Request,
    Response,
    Runtime,
    StorageLimitExceeded,
    WebSocket,
    WebSocketClosed,
)
from roost.runtime import ManualClock, SocketTransport, deliver_close, deliver_message
from roost.storage import MemoryEngine
from tests.conftest import quiesce


class FakeTransport(SocketTransport):
    def __init__(self) -> None:
        self.out: list[tuple[str, Any]] = []

    def accept(self, subprotocol: str | None) -> None:
        self.out.append(("accept", subprotocol))

    def send(self, message: str | bytes) -> None:
        self.out.append(("send", message))

    def close(self, code: int, reason: str) -> None:
        self.out.append(("close", code))


class Sock(DurableObject):
    async def fetch(self, request: Request) -> Response:
        ws = request.websocket
        assert ws is not None
        if request.url.path == "/held":
            ws.accept()
        else:
            self.ctx.accept_websocket(ws, tags=[request.url.path.strip("/")])
        return Response(status_code=101)

    async def websocket_message(self, ws: WebSocket, message: str | bytes) -> None:
        await self.ctx.storage.put("last", message)
        ws.send(f"stored {message!r}")
        await self.ctx.storage.put("after", 1)  # same step as the send: same batch

    async def tags(self) -> list[list[str]]:
        return [list(ws.tags) for ws in self.ctx.get_websockets()]


async def open_socket(runtime: Runtime, path: str) -> tuple[WebSocket, FakeTransport]:
    transport = FakeTransport()
    ws = WebSocket(transport)
    stub = runtime.env.SOCK.get_by_name("s")
    request = Request.build("http://object" + path, headers={"upgrade": "websocket"})
    request.scope["extensions"] = {"roost.websocket": ws}
    response = await stub.fetch(request)
    assert response.status_code == 101
    return ws, transport


async def test_send_waits_for_the_writes_before_it() -> None:
    engine = MemoryEngine()
    commits: list[dict[str, Any]] = []
    release = asyncio.Event()
    engine.fault_hook = lambda store, batch: commits.append(dict(batch.writes))
    async with Runtime({"SOCK": Sock}, engine=engine) as runtime:
        ws, transport = await open_socket(runtime, "/room")
        assert transport.out == [("accept", None)]
        # Hold the commit back: the frame must not leave until it is durable.
        original = engine.enqueue

        def slow(store: Any, batch: Any, done: Any) -> None:
            async def later() -> None:
                await release.wait()
                original(store, batch, done)

            asyncio.ensure_future(later())

        engine.enqueue = slow  # type: ignore[method-assign]
        delivery = asyncio.ensure_future(deliver_message(ws, "hi"))
        await quiesce()
        assert transport.out == [("accept", None)]
        release.set()
        await delivery
        await quiesce()
        assert transport.out == [("accept", None), ("send", "stored 'hi'")]
        # The writes on both sides of the send committed as one batch.
        assert {"last", "after"} <= set(commits[-1])


async def test_hibernatable_socket_does_not_keep_object_alive() -> None:
    clock = ManualClock()
    async with Runtime({"SOCK": Sock}, clock=clock, idle_timeout=5) as runtime:
        ws, transport = await open_socket(runtime, "/t1")
        object_id = runtime.env.SOCK.id_from_name("s")
        await clock.advance(6)
        runtime.evict_idle()  # (the runtime's own sweep may have done it already)
        assert not runtime.is_live("SOCK", object_id)
        await deliver_message(ws, "again")
        await quiesce()
        assert runtime.is_live("SOCK", object_id)
        assert transport.out[-1] == ("send", "stored 'again'")
        assert await runtime.env.SOCK.get_by_name("s").tags() == [["t1"]]
        await deliver_close(ws, 1000, "done")
        assert ws.closed and ws.close_code == 1000
        assert await runtime.env.SOCK.get_by_name("s").tags() == []


async def test_held_socket_keeps_object_alive_until_closed() -> None:
    clock = ManualClock()
    async with Runtime({"SOCK": Sock}, clock=clock, idle_timeout=5) as runtime:
        ws, transport = await open_socket(runtime, "/held")
        await clock.advance(60)
        assert runtime.evict_idle() == 0
        assert runtime.is_live("SOCK", runtime.env.SOCK.id_from_name("s"))
        await deliver_message(ws, "m1")
        assert await ws.receive() == "m1"
        await deliver_close(ws, 1001)
        with pytest.raises(WebSocketClosed):
            await ws.receive()
        with pytest.raises(WebSocketClosed):
            ws.send("late")
        await clock.advance(60)  # the runtime's own sweep evicts it now
        runtime.evict_idle()
        assert not runtime.is_live("SOCK", runtime.env.SOCK.id_from_name("s"))


async def test_accept_rules_and_attachment_limit() -> None:
    async with Runtime({"SOCK": Sock}) as runtime:
        ws, _ = await open_socket(runtime, "/x")
        with pytest.raises(RuntimeError):
            ws.accept()  # outside an object, and already accepted
        with pytest.raises(StorageLimitExceeded):
            ws.serialize_attachment("x" * 20_000)
        ws.serialize_attachment({"a": [1, 2]})
        copy = ws.deserialize_attachment()
        copy["a"].append(3)
        assert ws.deserialize_attachment() == {"a": [1, 2]}
        with pytest.raises(TypeError):
            ws.send(123)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            ws.close(1006)
        pending = WebSocket(FakeTransport())
        with pytest.raises(RuntimeError):
            pending.send("too early")


class BatchTransport(FakeTransport):
    def send_many(self, messages: Sequence[str | bytes]) -> None:
        self.out.append(("send_many", list(messages)))


class Caster(DurableObject):
    async def fetch(self, request: Request) -> Response:
        assert request.websocket is not None
        self.ctx.accept_websocket(request.websocket)
        return Response(status_code=101)

    async def websocket_message(self, ws: WebSocket, message: str | bytes) -> None:
        await self.ctx.storage.put("n", 1)
        for i in range(3):
            for other in self.ctx.get_websockets():
                other.send(f"{message}{i}")


async def test_one_release_hands_each_socket_its_frames_at_once() -> None:
    async with Runtime({"CAST": Caster}) as runtime:
        stub = runtime.env.CAST.get_by_name("c")
        pairs = []
        for _ in range(3):
            transport = BatchTransport()
            ws = WebSocket(transport)
            request = Request.build("http://object/", headers={"upgrade": "websocket"})
            request.scope["extensions"] = {"roost.websocket": ws}
            assert (await stub.fetch(request)).status_code == 101
            pairs.append((ws, transport))
        await quiesce()
        await deliver_message(pairs[0][0], "m")
        await quiesce()
        for _, transport in pairs:
            # Held by one commit, released together: one call, in order.
            assert transport.out == [("accept", None), ("send_many", ["m0", "m1", "m2"])]
        assert runtime.websockets._held == {}  # nothing left waiting
