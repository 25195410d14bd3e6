"""WebSockets through the front to objects, both styles, over a real uvicorn server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket as StarletteWebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from roost import App, DurableObject, Env, Request, Response, WebSocket
from roost.runtime import ManualClock
from roost.storage import MemoryEngine
from tests.conftest import Serve, ws_url

events: list[Any] = []


class Echo(DurableObject):
    """Held style: reads its socket in a background task and echoes."""

    async def fetch(self, request: Request) -> Response:
        ws = request.websocket
        if ws is None:
            return Response("expected websocket", status_code=426)
        if request.query_params.get("refuse"):
            return Response("no thanks", status_code=403)
        ws.accept()
        self.ctx.wait_until(self.pump(ws))
        return Response(status_code=101)

    async def pump(self, ws: WebSocket) -> None:
        async for message in ws:
            if message == "count":
                ws.send(str(await self.ctx.storage.get("n") or 0))
                continue
            await self.ctx.storage.put("n", (await self.ctx.storage.get("n") or 0) + 1)
            ws.send(message if isinstance(message, bytes) else "echo:" + message)
        events.append(("held closed", ws.close_code))


class Room(DurableObject):
    """Hibernation style, recording what it sees."""

    constructed = 0

    def __init__(self, ctx: Any, env: Env) -> None:
        super().__init__(ctx, env)
        Room.constructed += 1

    async def fetch(self, request: Request) -> Response:
        ws = request.websocket
        assert ws is not None
        tag = request.query_params.get("tag", "all")
        self.ctx.accept_websocket(ws, tags=[tag])
        ws.serialize_attachment({"tag": tag, "seen": 0})
        return Response(status_code=101)

    async def websocket_message(self, ws: WebSocket, message: str | bytes) -> None:
        if state_tag(ws) == "log":
            events.append(("message", message))
        state = ws.deserialize_attachment()
        state["seen"] += 1
        ws.serialize_attachment(state)
        if message == "fail-commit":
            await self.ctx.storage.put("doomed", 1)
            ws.send("must never arrive")
            return
        if message == "close-me":
            ws.close(4000, "as you wish")
            return
        if isinstance(message, str) and message.startswith("to:"):
            for other in self.ctx.get_websockets(message[3:]):
                other.send(f"{state['tag']} says hi")
            return
        ws.send(f"{state['tag']}:{state['seen']}:{len(self.ctx.get_websockets())}")

    async def websocket_close(self, ws: WebSocket, code: int, reason: str, clean: bool) -> None:
        events.append(("close", code, reason, clean))

    async def websocket_error(self, ws: WebSocket, error: Exception) -> None:
        events.append(("error", getattr(error, "code", None)))


def state_tag(ws: WebSocket) -> str:
    return str(ws.deserialize_attachment()["tag"])


async def front(request: Request, env: Env) -> Response:
    name = request.url.path.strip("/").split("/")
    stub = (env.ECHO if name[0] == "echo" else env.ROOM).get_by_name(name[-1])
    return await stub.fetch(request)


def make_app(**options: Any) -> App:
    return App({"ECHO": Echo, "ROOM": Room}, fetch=front, **options)


@pytest.fixture(autouse=True)
def _reset_events() -> None:
    events.clear()
    Room.constructed = 0


async def test_held_socket_echoes_and_keeps_object_alive(serve: Serve) -> None:
    clock = ManualClock()
    app = make_app(clock=clock, idle_timeout=5.0)
    async with serve(app) as url, connect(ws_url(url, "/echo/a")) as ws:
        await ws.send("hello")
        assert await ws.recv() == "echo:hello"
        await ws.send(b"\x00\x01")
        assert await ws.recv() == b"\x00\x01"
        object_id = app.env.ECHO.id_from_name("a")
        await clock.advance(60)
        assert app.runtime.evict_idle() == 0
        assert app.runtime.is_live("ECHO", object_id)
        await ws.send("count")
        assert await ws.recv() == "2"
        assert app.runtime.websockets.statistics().held == 1
        await ws.close()
        for _ in range(200):
            if events:
                break
            await asyncio.sleep(0.005)
        assert events == [("held closed", 1000)]
        assert app.runtime.websockets.statistics().held == 0


async def test_refused_upgrade_gets_the_objects_response(serve: Serve) -> None:
    async with serve(make_app()) as url:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(url, "/echo/a?refuse=1")):
                pass
        assert refused.value.response.status_code == 403
        assert refused.value.response.body == b"no thanks"


async def test_request_keeps_method_headers_and_query(serve: Serve) -> None:
    seen: list[Request] = []

    class Peek(DurableObject):
        async def fetch(self, request: Request) -> Response:
            seen.append(request)
            assert request.websocket is not None
            request.websocket.accept(subprotocol="chat.v1")
            return Response(status_code=101)

    async def peek_front(request: Request, env: Env) -> Response:
        return await env.PEEK.get_by_name("x").fetch(request)

    app = App({"PEEK": Peek}, fetch=peek_front)
    async with serve(app) as url:
        headers = {"x-custom": "yes"}
        async with connect(
            ws_url(url, "/p/q?a=1&b=2"), additional_headers=headers, subprotocols=["chat.v1"]
        ) as ws:
            assert ws.subprotocol == "chat.v1"
    (request,) = seen
    assert request.method == "GET"
    assert request.url.path == "/p/q"
    assert request.url.query == "a=1&b=2"
    assert request.headers["x-custom"] == "yes"
    assert request.headers["upgrade"].lower() == "websocket"


async def test_hibernation_tags_attachments_and_eviction(serve: Serve) -> None:
    clock = ManualClock()
    app = make_app(clock=clock, idle_timeout=5.0)
    async with (
        serve(app) as url,
        connect(ws_url(url, "/room/r?tag=red")) as red,
        connect(ws_url(url, "/room/r?tag=blue")) as blue,
    ):
        await red.send("x")
        assert await red.recv() == "red:1:2"
        room_id = app.env.ROOM.id_from_name("r")
        await clock.advance(6)
        for _ in range(200):
            app.runtime.evict_idle()
            if not app.runtime.is_live("ROOM", room_id):
                break
            await asyncio.sleep(0.005)
        assert not app.runtime.is_live("ROOM", room_id)
        assert Room.constructed == 1
        await blue.send("to:red")
        assert await red.recv() == "blue says hi"
        assert Room.constructed == 2
        await red.send("x")
        assert await red.recv() == "red:2:2"  # the attachment counted across the eviction
        await blue.send("close-me")
        with pytest.raises(ConnectionClosed) as closed:
            await blue.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "as you wish")
        await red.send("x")
        assert await red.recv() == "red:3:1"
        await red.close(4001, "bye")
        for _ in range(200):
            if events:
                break
            await asyncio.sleep(0.005)
    # The socket the object closed itself gets no close event; the other does.
    assert events == [("close", 4001, "bye", True)]


async def test_failed_commit_releases_no_frame(serve: Serve) -> None:
    engine = MemoryEngine()

    def fail_doomed(store: Any, batch: Any) -> None:
        if "doomed" in batch.writes:
            raise OSError("disk on fire")

    engine.fault_hook = fail_doomed
    async with serve(make_app(engine=engine)) as url, connect(ws_url(url, "/room/f")) as ws:
        await ws.send("fail-commit")
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011


@pytest.mark.parametrize(
    ("frame", "code"),
    [("broken-frame", 1002), ("invalid-utf8", 1007), ("too-big", 1009)],
)
async def test_bad_frames_close_with_clear_codes_and_lose_nothing(
    serve: Serve, frame: str, code: int
) -> None:
    app = make_app(max_message_size=1024)
    url_path = "/room/bad?tag=log"
    async with serve(app) as url, connect(ws_url(url, url_path), max_size=None) as ws:
        for n in range(3):
            await ws.send(f"x{n}")
        if frame == "broken-frame":
            # A masked text frame "x" with RSV2 set, which no extension defines:
            # a protocol error.  Written raw: the client refuses to make it.
            mask = b"\x01\x02\x03\x04"
            ws.transport.write(bytes([0x80 | 0x20 | 0x1, 0x80 | 1]) + mask + bytes([ord("x") ^ 1]))
        elif frame == "invalid-utf8":
            ws.protocol.send_text(b"\xff\xfe")  # bypasses the client's own UTF-8 check
            ws.send_data()
        else:
            await ws.send("y" * 2048)
        with pytest.raises(ConnectionClosed) as closed:
            while True:  # replies to x0..x2 may or may not beat the close frame
                await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == code
        for _ in range(200):
            if events and events[-1][0] == "error":
                break
            await asyncio.sleep(0.005)
    # Every message before the bad frame reached the object, in order, then the error.
    assert events == [("message", "x0"), ("message", "x1"), ("message", "x2"), ("error", code)]


async def test_starlette_route_hands_socket_to_object(serve: Serve) -> None:
    async def endpoint(websocket: StarletteWebSocket) -> None:
        stub = websocket.state.env.ECHO.get_by_name(websocket.path_params["name"])
        response = await stub.fetch(websocket)
        if response.status_code != 101:
            await websocket.send_denial_response(response)

    app = App({"ECHO": Echo}, routes=[WebSocketRoute("/ws/{name}", endpoint)])
    async with serve(app) as url:
        async with connect(ws_url(url, "/ws/s")) as ws:
            await ws.send("hi")
            assert await ws.recv() == "echo:hi"
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(url, "/ws/s?refuse=1")):
                pass
        assert refused.value.response.status_code == 403


async def test_shutdown_closes_sockets_with_1001(serve: Serve) -> None:
    app = make_app()
    async with serve(app) as url:
        held = await connect(ws_url(url, "/echo/z"))
        hibernating = await connect(ws_url(url, "/room/z"))
        await held.send("a")
        assert await held.recv() == "echo:a"
        await hibernating.send("a")
        assert await hibernating.recv() == "all:1:1"
    for ws in (held, hibernating):
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
