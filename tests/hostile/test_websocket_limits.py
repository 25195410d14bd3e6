"""Hostile WebSocket input against the real server: an oversized message gets a
close frame the client can read, unfinished fragments of all connections share
one bound, a client that stops reading is dropped at a bound, and a normal
client is served meanwhile (issue 23, the WebSocket part).  Last, the HTTP
answer to a commit that storage refused (a full database): 503, Retry-After."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from roost import App
from tests.conftest import ws_url
from tests.hostile.conftest import Sink
from tests.hostile.test_http_limits import rss

ServeWith = Callable[..., AbstractAsyncContextManager[str]]
MakeApp = Callable[..., App]

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
MASK = b"\x11\x22\x33\x44"


class RawSocket:
    """A WebSocket client over a bare TCP socket: it sends exactly the frames a
    test writes (unfinished fragments, a header announcing a huge payload) and
    reads only when the test asks."""

    #: Every one opened, closed after each test.
    opened: ClassVar[list[RawSocket]] = []

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        RawSocket.opened.append(self)

    @classmethod
    async def open(cls, url: str, path: str, *, receive_buffer: int | None = None) -> RawSocket:
        host, port = url.removeprefix("http://").split(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:  # before connecting: it sets the TCP window
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        # A small read limit: a client that stops reading holds little here.
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        raw = cls(reader, writer)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101 "), head
        return raw

    def send(self, opcode: int, payload: bytes, *, fin: bool = True) -> None:
        self.writer.write(header(opcode, len(payload), fin=fin) + masked(payload))

    async def ping(self) -> None:
        """A ping answered: the server has parsed everything sent before it."""
        self.send(PING, b"p")
        while (await self.frame())[0] != PONG:
            pass

    async def frame(self, within: float = 5.0) -> tuple[int, bytes]:
        """The next frame from the server: its opcode and payload."""
        first, second = await asyncio.wait_for(self.reader.readexactly(2), within)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await asyncio.wait_for(self.reader.readexactly(size), within)

    async def close_code(self) -> int:
        """The code of the server's close frame, skipping frames before it."""
        while True:
            opcode, payload = await self.frame()
            if opcode == CLOSE:
                code: int = struct.unpack("!H", payload[:2])[0]
                return code

    async def at_eof(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 5) == b""


def header(opcode: int, size: int, *, fin: bool = True) -> bytes:
    """A masked client frame's header (the payload follows, masked)."""
    first = opcode | (0x80 if fin else 0)
    if size < 126:
        return bytes((first, 0x80 | size)) + MASK
    if size < 65536:
        return struct.pack("!BBH", first, 0x80 | 126, size) + MASK
    return struct.pack("!BBQ", first, 0x80 | 127, size) + MASK


def masked(payload: bytes) -> bytes:
    mask = (MASK * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(
        len(payload), "big"
    )


@pytest.fixture(autouse=True)
async def _close_raw_sockets() -> AsyncIterator[None]:
    yield
    while RawSocket.opened:
        RawSocket.opened.pop().writer.close()


async def echoed(url: str, message: str = "hello") -> bool:
    """A normal client on an object of its own: its message comes back."""
    async with connect(ws_url(url, "/normal"), compression=None) as ws:
        await ws.send(message)
        return await asyncio.wait_for(ws.recv(), 5) == message


async def eventually(check: Callable[[], bool], what: str) -> None:
    """Wait (at most 5 s) until ``check()``: the server hears of a close on a later turn."""
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"{what} never happened; the object heard {Sink.closes}")


def codes() -> list[int]:
    """The close codes the Sink objects' websocket_close heard."""
    return [code for code, _ in Sink.closes]


# -- a message over the size limit: a close frame the client can read --------------------


async def test_a_message_over_the_size_limit_gets_a_readable_1009(
    hostile_server: ServeWith, hostile_app: MakeApp
) -> None:
    async with hostile_server(hostile_app(max_message_size=64 * 1024)) as url:
        assert await echoed(url, "x" * 60_000)  # within the bound
        big = await RawSocket.open(url, "/big")
        # A header announcing 8 MiB, then a first MiB of it, all in the
        # socket before the server reads: it refuses with data left unread.
        big.writer.write(header(BINARY, 8 * 1024 * 1024) + b"\0" * (1024 * 1024))
        with contextlib.suppress(ConnectionError):
            await big.writer.drain()
        assert await big.close_code() == 1009
        assert await big.at_eof()  # then a clean end of stream, not a reset
        await eventually(lambda: 1009 in codes(), "1009 reaching the object")
        assert await echoed(url)


# -- unfinished fragmented messages: one bound for all connections -------------------------


PIECE = b"a" * 300_000  # in a bound of 1,000,000: 3 fit, the 4th does not


async def holding(url: str) -> RawSocket:
    """A connection holding an unfinished message of one PIECE."""
    ws = await RawSocket.open(url, "/frag")
    ws.send(TEXT, PIECE, fin=False)
    await ws.ping()  # counted: the pong comes after the fragment was parsed
    return ws


async def test_unfinished_fragments_share_a_bound_that_is_given_back(
    hostile_server: ServeWith,
) -> None:
    async with hostile_server(max_fragmented_bytes=1_000_000) as url:
        holders = [await holding(url) for _ in range(3)]
        refused = await RawSocket.open(url, "/frag")
        refused.send(TEXT, PIECE, fin=False)
        assert await refused.close_code() == 1009
        assert await refused.at_eof()
        await eventually(lambda: 1009 in codes(), "1009 reaching the object")
        assert await echoed(url)
        # The earlier ones are fine: a message completed is delivered whole...
        holders[0].send(CONT, b"!")
        assert await holders[0].frame() == (TEXT, PIECE + b"!")
        # ...and its share is given back: another connection's fragment fits.
        holders.append(await holding(url))
        for ws in holders[1:]:
            ws.send(CONT, b"!")
            assert await ws.frame() == (TEXT, PIECE + b"!")
        # Held again, then given back by connections that close unfinished.
        for ws in holders[1:]:
            ws.send(TEXT, PIECE, fin=False)
            await ws.ping()
        closes = len(Sink.closes)
        for ws in holders:
            ws.writer.close()
        await eventually(lambda: len(Sink.closes) == closes + len(holders), "the closes")
        again = [await holding(url) for _ in range(3)]
        for ws in again:
            ws.send(CONT, b"!")
            assert await ws.frame() == (TEXT, PIECE + b"!")


async def test_a_frame_still_arriving_counts_toward_the_bound(hostile_server: ServeWith) -> None:
    async with hostile_server(max_fragmented_bytes=1_000_000) as url:
        holders = [await holding(url) for _ in range(3)]
        # Most of one large frame, never finished: held by the parser, not a fragment.
        arriving = await RawSocket.open(url, "/frag")
        arriving.writer.write(header(TEXT, len(PIECE)) + masked(PIECE[:200_000]))
        assert await arriving.close_code() == 1009
        assert await arriving.at_eof()
        assert await echoed(url)
        # With room again, a frame arriving in parts is delivered whole.
        for ws in holders:
            ws.send(CONT, b"!")
            assert await ws.frame() == (TEXT, PIECE + b"!")
        whole = await RawSocket.open(url, "/frag")
        whole.writer.write(header(TEXT, len(PIECE)) + masked(PIECE[:200_000]))
        await whole.writer.drain()
        await asyncio.sleep(0.05)  # the client's own pace: the rest comes later
        whole.writer.write(masked(PIECE[200_000:]))  # (a multiple of 4 in: same mask)
        assert await whole.frame() == (TEXT, PIECE)


# -- a client that stops reading -----------------------------------------------------------


async def test_a_client_that_stops_reading_is_dropped_with_1008(
    hostile_server: ServeWith,
) -> None:
    bound = 1024 * 1024
    text = "x" * 8192

    async def read_all(ws: ClientConnection, seen: list[int]) -> None:
        while True:
            message = await ws.recv()
            assert isinstance(message, str)
            if message == "all:end":
                return
            seen.append(int(message.split(":")[1]))

    async with hostile_server(max_send_buffer_bytes=bound) as url:
        before = rss()
        readers = [await connect(ws_url(url, "/room"), compression=None) for _ in range(2)]
        # A small TCP window: the kernel buffers little for it, the server the rest.
        await RawSocket.open(url, "/room", receive_buffer=4096)
        seen: list[list[int]] = [[], []]
        reading = [
            asyncio.ensure_future(read_all(ws, s)) for ws, s in zip(readers, seen, strict=True)
        ]
        try:
            sent = 0
            while 1008 not in codes():
                assert sent < 4000, "the client that does not read was never dropped"
                await readers[0].send(f"all:{sent}:{text}")
                sent += 1
                if sent % 50 == 0:  # a short backlog: the drop is seen soon after it happens
                    await asyncio.wait_for(await readers[0].ping(), 5)
            await readers[0].send("all:end")
            await asyncio.wait_for(asyncio.gather(*reading), 10)
        finally:
            for task in reading:
                task.cancel()
        # Dropped past the bound, not before it; the readers got every message, in order.
        assert sent * len(text) > bound
        assert seen == [list(range(sent))] * 2
        assert (1008, "client too slow") in Sink.closes
        assert rss() - before < 48 * 1024 * 1024
        assert await echoed(url)
        for ws in readers:
            await ws.close()


# -- a commit refused by a full database: 503 with Retry-After (HTTP) ---------------------


async def test_a_commit_refused_by_a_full_database_is_503_with_retry_after(
    hostile_server: ServeWith, hostile_app: MakeApp, tmp_path: Path
) -> None:
    """SQLite refuses the write itself (``SQLITE_FULL``, as on a full disk):
    the client is told to retry, and is served once there is room again."""
    app = hostile_app(data_dir=tmp_path)
    async with hostile_server(app) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.post("/a/keep", content=b"x")).text == "/a/keep 1"
        database = app.runtime.engine._connection()
        pages = database.execute("PRAGMA page_count").get
        database.execute(f"PRAGMA max_page_count={pages}")  # no page more: full
        response = await client.post("/b/keep", content=b"y" * 120_000)
        assert response.status_code == 503, response.text
        assert "commit failed" in response.text
        assert response.headers["retry-after"] == "1"
        assert (await client.get("/")).text == "ok"  # served meanwhile
        database.execute("PRAGMA max_page_count=1073741823")  # room again
        for name in ("b", "c"):  # the object refused, retrying, and any other
            response = await client.post(f"/{name}/keep", content=b"y" * 120_000)
            assert response.text == f"/{name}/keep 120000"
