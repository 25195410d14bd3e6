"""The direct frame writer: frames built once, several per write, with and without deflate."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from roost import App, DurableObject, Env, Request, Response, WebSocket
from roost.server import running
from roost.server.protocol import encode_frame
from tests.conftest import Serve, ws_url

# Real servers or processes: an integration test.
pytestmark = pytest.mark.integration

closes: list[int] = []


class Hall(DurableObject):
    async def fetch(self, request: Request) -> Response:
        ws = request.websocket
        assert ws is not None
        self.ctx.accept_websocket(ws)
        return Response(status_code=101)

    async def websocket_message(self, ws: WebSocket, message: str | bytes) -> None:
        command, _, arg = str(message).partition(":")
        if command == "burst":
            # A write first, so every frame below waits for one commit and
            # leaves in one release, several frames per socket.
            await self.ctx.storage.put("bursts", (await self.ctx.storage.get("bursts") or 0) + 1)
            for size in map(int, arg.split(",")):
                text = f"{size}:" + "x" * size
                for other in self.ctx.get_websockets():
                    other.send(text)
                    other.send(text.encode())
            ws.send("done")
        elif command == "flood":
            chunk = b"y" * 65536
            for _ in range(int(arg)):
                ws.send(chunk)

    async def websocket_close(self, ws: WebSocket, code: int, reason: str, clean: bool) -> None:
        closes.append(code)


async def front(request: Request, env: Env) -> Response:
    return await env.HALL.get_by_name("h").fetch(request)


SIZES = [0, 1, 125, 126, 127, 65535, 65536, 70000]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", [str, bytes])
def test_encode_frame_header_and_reuse(size: int, kind: type) -> None:
    message: str | bytes = "é" * size if kind is str else b"\x01" * size
    payload = message.encode() if isinstance(message, str) else message
    frame = encode_frame(message)
    assert frame[0] == (0x81 if kind is str else 0x82)
    n = len(payload)
    if n < 126:
        assert frame[1] == n and frame[2:] == payload
    elif n < 65536:
        assert frame[1] == 126 and struct.unpack("!H", frame[2:4])[0] == n
        assert frame[4:] == payload
    else:
        assert frame[1] == 127 and struct.unpack("!Q", frame[2:10])[0] == n
        assert frame[10:] == payload
    if n <= 16 * 1024:
        assert encode_frame(message) is frame  # built once per message object


@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_broadcast_frames_arrive_whole_and_in_order(
    serve: Serve, compression: str | None
) -> None:
    app = App({"HALL": Hall}, fetch=front)
    sizes = [3, 125, 126, 65536, 70000]
    async with serve(app) as url:
        sockets = [
            await connect(ws_url(url, "/"), compression=compression, max_size=2**20)
            for _ in range(3)
        ]
        try:
            await sockets[0].send("burst:" + ",".join(map(str, sizes)))
            expected: list[Any] = []
            for size in sizes:
                text = f"{size}:" + "x" * size
                expected += [text, text.encode()]
            for i, sock in enumerate(sockets):
                got = [await asyncio.wait_for(sock.recv(), 5) for _ in expected]
                assert got == expected
                if i == 0:
                    assert await asyncio.wait_for(sock.recv(), 5) == "done"
        finally:
            for sock in sockets:
                await sock.close()


async def test_client_that_does_not_read_is_dropped() -> None:
    closes.clear()
    app = App({"HALL": Hall}, fetch=front)
    async with running(app, max_send_buffer_bytes=1024 * 1024) as url:
        # max_queue=1: the client stops reading after one message.
        sock = await connect(ws_url(url, "/"), compression=None, max_queue=1)
        await sock.send("flood:400")  # 25 MiB, far past socket buffers and the limit
        for _ in range(500):
            if closes:
                break
            await asyncio.sleep(0.01)
        # Dropped without a close frame (it would wait behind what the client
        # is not reading); the object heard 1008.
        assert closes == [1008]
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(sock.recv(), 5)
