"""Hostile HTTP input against the real server: heads, bodies and connections
beyond their bounds are refused with a clear status, and a normal client is
served meanwhile (issue 23, severe 2 and 3, defect 6, two minor items)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from roost import App
from roost.server import make_config
from roost.server._http1 import HttpProtocol
from roost.server.limits import ServerConfig, default_max_connections

ServeWith = Callable[..., AbstractAsyncContextManager[str]]
MakeApp = Callable[..., App]
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


_opened: list[asyncio.StreamWriter] = []


@pytest.fixture(autouse=True)
async def _close_connections() -> AsyncIterator[None]:
    yield
    for writer in _opened:
        writer.close()
    _opened.clear()


async def connect(url: str) -> Streams:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    _opened.append(writer)
    return reader, writer


async def response(reader: asyncio.StreamReader, within: float = 5.0) -> tuple[int, bytes]:
    """Status and body of the next response (bodies here always have a length)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), within)
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    body = await asyncio.wait_for(reader.readexactly(length), within)
    return int(lines[0].split()[1]), body


async def closed(reader: asyncio.StreamReader, within: float = 5.0) -> bool:
    """True once the server closed the connection (EOF or reset)."""
    try:
        return await asyncio.wait_for(reader.read(), within) == b""
    except ConnectionError:
        return True


async def served(url: str, path: str = "/") -> bytes:
    """A normal client's GET: must be answered 200."""
    reader, writer = await connect(url)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, body = await response(reader)
        assert status == 200, body
        return body
    finally:
        writer.close()


async def refused_while_sending(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, piece: bytes, most: int
) -> tuple[int, int]:
    """Write ``piece`` again and again (at most ``most`` bytes) until the server
    answers; its status and the bytes written by then."""
    sent = 0

    async def send() -> None:
        nonlocal sent
        with contextlib.suppress(ConnectionError):
            while sent < most:
                writer.write(piece)
                await writer.drain()
                sent += len(piece)

    sender = asyncio.ensure_future(send())
    try:
        status, _ = await response(reader, within=10.0)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
    return status, sent


def rss() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- request line and header block (severe 2) ------------------------------------------------


async def test_a_url_over_the_limit_is_answered_414_and_closed(hostile_server: ServeWith) -> None:
    async with hostile_server(max_url_bytes=1024) as url:
        assert (await served(url, "/" + "a" * 1000)).endswith(b" 0")  # within the bound
        reader, writer = await connect(url)
        writer.write(b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await response(reader))[0] == 414
        assert await closed(reader)
        assert await served(url) == b"ok"


async def test_a_url_that_never_ends_is_cut_off(hostile_server: ServeWith) -> None:
    async with hostile_server(max_url_bytes=64 * 1024) as url:
        reader, writer = await connect(url)
        writer.write(b"GET /")
        status, sent = await refused_while_sending(reader, writer, b"a" * 4096, 256 * 1024**2)
        assert status == 414
        assert sent < 64 * 1024 * 1024  # answered long before the client ran out
        assert await served(url) == b"ok"


async def test_a_url_in_many_pieces_costs_linear_time(hostile_app: MakeApp) -> None:
    """httptools hands the URL over as it arrives: 20,000 pieces of 100 bytes
    were joined by bytes concatenation, 20 GB of copying (seconds of loop)."""
    config = make_config(hostile_app(), lifespan="off", max_url_bytes=4 * 1024 * 1024)
    protocol = HttpProtocol(config, ServerState(), {}, asyncio.get_running_loop())
    transport = _Transport()
    protocol.connection_made(transport)
    protocol.data_received(b"GET /")
    start = time.process_time()
    for _ in range(20_000):
        protocol.data_received(b"a" * 100)
    assert time.process_time() - start < 1.0
    assert len(protocol.url) == 1 + 20_000 * 100
    protocol.connection_lost(None)


async def test_too_many_headers_are_answered_431(hostile_server: ServeWith) -> None:
    async with hostile_server(max_headers=10) as url:
        reader, writer = await connect(url)
        headers = b"".join(b"X-%d: v\r\n" % i for i in range(11))
        writer.write(b"GET / HTTP/1.1\r\n" + headers + b"\r\n")
        assert (await response(reader))[0] == 431
        assert await closed(reader)
        assert await served(url) == b"ok"


async def test_a_header_block_over_the_limit_is_answered_431(hostile_server: ServeWith) -> None:
    async with hostile_server(max_header_bytes=1024) as url:
        reader, writer = await connect(url)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 2000 + b"\r\n\r\n")
        assert (await response(reader))[0] == 431
        assert await closed(reader)
        assert await served(url) == b"ok"


async def test_a_header_that_never_ends_is_cut_off(hostile_server: ServeWith) -> None:
    async with hostile_server(max_header_bytes=64 * 1024) as url:
        before = rss()
        reader, writer = await connect(url)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        status, sent = await refused_while_sending(reader, writer, b"v" * 4096, 256 * 1024**2)
        assert status == 431
        assert sent < 64 * 1024 * 1024
        assert await served(url) == b"ok"
        assert rss() - before < 48 * 1024 * 1024


# -- connections that never finish a request, and too many connections (severe 3) ----------


async def test_a_silent_connection_gets_408_after_the_header_timeout(
    hostile_server: ServeWith,
) -> None:
    async with hostile_server(header_timeout=0.2) as url:
        reader, _ = await connect(url)
        assert (await response(reader))[0] == 408
        assert await closed(reader)
        assert await served(url) == b"ok"


async def test_slowloris_is_cut_off_while_others_are_served(hostile_server: ServeWith) -> None:
    async with hostile_server(header_timeout=0.5) as url:
        reader, writer = await connect(url)
        writer.write(b"GET / HTTP/1.1\r\n")

        async def trickle() -> None:
            # The hostile client's own pace: a header byte every 20 ms, forever.
            with_errors = (ConnectionError, RuntimeError)
            try:
                while True:
                    writer.write(b"X")
                    await writer.drain()
                    await asyncio.sleep(0.02)
            except with_errors:
                pass

        task = asyncio.ensure_future(trickle())
        try:
            assert await served(url) == b"ok"
            assert (await response(reader))[0] == 408
            assert await closed(reader)
        finally:
            task.cancel()


async def test_a_slow_honest_client_within_the_timeout_is_served(
    hostile_server: ServeWith,
) -> None:
    async with hostile_server(header_timeout=2.0) as url:
        reader, writer = await connect(url)
        for piece in (b"GET / HT", b"TP/1.1\r\nHo", b"st: x\r\n", b"\r\n"):
            writer.write(piece)
            await asyncio.sleep(0.05)  # the client's own pace, well within the timeout
        assert await response(reader) == (200, b"ok")
        writer.close()


async def test_a_stalled_second_request_on_a_kept_alive_connection_gets_408(
    hostile_server: ServeWith,
) -> None:
    async with hostile_server(header_timeout=0.2, timeout_keep_alive=30) as url:
        reader, writer = await connect(url)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await response(reader) == (200, b"ok")
        writer.write(b"GET / HTTP/1.1\r\nHo")
        assert (await response(reader))[0] == 408
        assert await closed(reader)


async def test_connections_over_the_cap_are_refused_with_503(hostile_server: ServeWith) -> None:
    async with hostile_server(limit_concurrency=4, header_timeout=30) as url:
        idle = [await connect(url) for _ in range(3)]
        reader, _ = await connect(url)  # the fourth: refused at once, before any request
        assert (await response(reader))[0] == 503
        assert await closed(reader)
        for _, writer in idle:
            writer.close()
        # The server hears of the closes on its next loop turns.
        for _ in range(100):
            try:
                assert await served(url) == b"ok"
                break
            except AssertionError:
                await asyncio.sleep(0.01)
        else:
            pytest.fail("the server never served a client after the idle ones left")


def test_the_default_connection_cap_leaves_descriptors_for_storage(
    monkeypatch: pytest.MonkeyPatch, hostile_app: MakeApp
) -> None:
    def limit(soft: int) -> None:
        monkeypatch.setattr(resource, "getrlimit", lambda _: (soft, soft))

    limit(1024)
    assert default_max_connections() == 768
    limit(20_000)
    assert default_max_connections() == 17_500
    limit(resource.RLIM_INFINITY)
    assert default_max_connections() is None
    limit(1024)
    config = make_config(hostile_app())
    assert isinstance(config, ServerConfig)
    assert config.limit_concurrency == 768
    assert make_config(hostile_app(), limit_concurrency=None).limit_concurrency is None


# -- request bodies (defect 6) ------------------------------------------------------------------


async def test_a_declared_body_over_the_limit_is_answered_413_up_front(
    hostile_server: ServeWith,
) -> None:
    async with hostile_server(max_body_bytes=1000) as url:
        reader, writer = await connect(url)
        writer.write(b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n")
        assert (await response(reader))[0] == 413  # without a byte of the body
        assert await closed(reader)
        reader, writer = await connect(url)
        writer.write(b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"b" * 1000)
        assert await response(reader) == (200, b"/s 1000")  # the bound itself is fine
        writer.close()


async def test_a_chunked_body_over_the_limit_is_cut_off_with_413(
    hostile_server: ServeWith,
) -> None:
    async with hostile_server(max_body_bytes=1024 * 1024) as url:
        before = rss()
        reader, writer = await connect(url)
        writer.write(b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"10000\r\n" + b"c" * 0x10000 + b"\r\n"
        status, sent = await refused_while_sending(reader, writer, chunk, 256 * 1024**2)
        assert status == 413
        assert sent < 64 * 1024 * 1024
        assert await served(url) == b"ok"
        assert rss() - before < 48 * 1024 * 1024
        # Within the bound, a chunked body still reaches the object whole.
        reader, writer = await connect(url)
        writer.write(
            b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n"
        )
        assert await response(reader) == (200, b"/s 5")
        writer.close()


# -- paths and versions (minor) --------------------------------------------------------------


async def test_percent_escapes_that_are_not_utf8_are_answered_400(
    hostile_server: ServeWith,
) -> None:
    async with hostile_server() as url:
        for path in (b"/counter/%ff", b"/counter/%fe", b"/%c3"):
            reader, writer = await connect(url)
            writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await response(reader))[0] == 400, path
            assert await closed(reader)
        assert await served(url, "/caf%C3%A9") == "/café 0".encode()


async def test_a_request_line_without_a_version_is_answered_400(
    hostile_server: ServeWith,
) -> None:
    async with hostile_server() as url:
        reader, writer = await connect(url)
        writer.write(b"GET /\r\n\r\n")
        assert (await response(reader))[0] == 400
        assert await closed(reader)
        assert await served(url) == b"ok"


class _Transport(asyncio.Transport):
    def write(self, data: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5000)}.get(name, default)


def test_a_plain_uvicorn_config_gets_the_default_limits(hostile_app: MakeApp) -> None:
    config = uvicorn.Config(hostile_app(), lifespan="off")
    protocol = HttpProtocol(config, ServerState(), {}, asyncio.new_event_loop())
    assert protocol.max_body_bytes == 16 * 1024 * 1024
    protocol.loop.close()
