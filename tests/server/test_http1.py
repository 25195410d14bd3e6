"""Roost's HTTP/1.1 protocol, over real sockets (and one property on a fake transport)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from roost import App
from roost.server import running
from roost.server._http1 import HttpProtocol

# Real servers or processes: an integration test.
pytestmark = pytest.mark.integration

Scope = dict[str, Any]


async def echo(scope: Scope, receive: Any, send: Any) -> None:
    """Answers with the method, path, query and the whole request body."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one,", b"two,", b"three"):
            await asyncio.sleep(0.01)
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if scope["path"] == "/late":
        # Headers first, the body only much later: the client must see the
        # headers before the body exists.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.5)
        await send({"type": "http.response.body", "body": b"late"})
        return
    if scope["path"] == "/boom":
        raise RuntimeError("the app failed")
    if scope["path"] == "/bad-header":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x", b"a\r\nb")]})
        return
    if scope["path"] == "/bytearrays":
        headers = [(bytearray(b"X-Kind"), bytearray(b"bytearray")), (b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    if scope["path"] == "/client":
        body = f"{scope['client'][0]} {scope['scheme']}".encode()
    text = f"{scope['method']} {scope['path']} {scope['query_string'].decode()} ".encode() + body
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(text))],
        }
    )
    await send({"type": "http.response.body", "body": text})


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with running(App({}, asgi=echo), timeout_keep_alive=1) as base:
        yield base


async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def body_of(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> bytes:
    """Send one raw request on the connection and read its response's body."""
    writer.write(request)
    return (await read_response(reader))[2]


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers (lower-case names) and the decoded body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = b""
    return status, headers, body


GET = b"GET /path?q=1 HTTP/1.1\r\nHost: x\r\n\r\n"


async def test_keep_alive_serves_many_requests_on_one_connection(url: str) -> None:
    reader, writer = await connect(url)
    for _ in range(3):
        writer.write(GET)
        status, headers, body = await read_response(reader)
        assert (status, body) == (200, b"GET /path q=1 ")
        assert "connection" not in headers
        assert "date" in headers
    writer.close()


async def test_pipelined_requests_are_answered_in_order(url: str) -> None:
    reader, writer = await connect(url)
    writer.write(b"".join(f"GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(5)))
    bodies = [(await read_response(reader))[2] for _ in range(5)]
    assert bodies == [f"GET /{i}  ".encode() for i in range(5)]
    writer.close()


async def test_request_bodies_by_length_and_chunked(url: str) -> None:
    reader, writer = await connect(url)
    request = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    assert await body_of(reader, writer, request) == b"POST /p  hello"
    request = (
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
    )
    assert await body_of(reader, writer, request) == b"POST /c  abcdefg"
    big = b"x" * 300_000  # over the read buffer's high-water mark: reading pauses and resumes
    writer.write(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(big) + big)
    assert (await read_response(reader))[2] == b"POST /big  " + big
    writer.close()


async def test_expect_100_continue(url: str) -> None:
    reader, writer = await connect(url)
    writer.write(
        b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
    )
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    writer.write(b"abc")
    assert (await read_response(reader))[2] == b"POST /e  abc"
    writer.close()


async def test_head_gets_the_headers_without_the_body(url: str) -> None:
    reader, writer = await connect(url)
    writer.write(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n" + GET)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200") and b"content-length: 9" in head  # "HEAD /h  "
    # No body follows: the next bytes are the next response.
    assert (await read_response(reader))[2] == b"GET /path q=1 "
    writer.close()


async def test_streaming_response_is_chunked_and_headers_come_first(url: str) -> None:
    reader, writer = await connect(url)
    writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = await read_response(reader)
    assert (status, headers["transfer-encoding"], body) == (200, "chunked", b"one,two,three")
    writer.write(b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 0.4)  # before the body exists
    assert head.startswith(b"HTTP/1.1 200")
    writer.close()


async def test_http10_and_connection_close_end_the_connection(url: str) -> None:
    for request in (
        b"GET /a HTTP/1.0\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ):
        reader, writer = await connect(url)
        writer.write(request)
        status, headers, _ = await read_response(reader)
        assert status == 200 and headers["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        writer.close()


async def test_idle_connection_closes_after_the_keep_alive_timeout(url: str) -> None:
    reader, writer = await connect(url)
    writer.write(GET)
    await read_response(reader)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # timeout_keep_alive=1
    writer.close()


async def test_busy_connection_is_not_timed_out(url: str) -> None:
    reader, writer = await connect(url)
    for _ in range(8):  # 2 s of traffic on a 1 s keep-alive timeout
        writer.write(GET)
        assert (await read_response(reader))[0] == 200
        await asyncio.sleep(0.25)
    writer.close()


async def test_malformed_request_gets_400_and_close(url: str) -> None:
    reader, writer = await connect(url)
    writer.write(b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n")
    status, headers, body = await read_response(reader)
    assert status == 400 and headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_app_errors(url: str) -> None:
    reader, writer = await connect(url)
    writer.write(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = await read_response(reader)
    assert (status, body, headers["connection"]) == (500, b"Internal Server Error", "close")
    writer.close()
    reader, writer = await connect(url)
    writer.write(b"GET /bad-header HTTP/1.1\r\nHost: x\r\n\r\n")
    # A header value with CR LF would split the response: nothing of it is sent.
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_header_names_and_values_may_be_bytearrays(url: str) -> None:
    reader, writer = await connect(url)
    for _ in range(2):  # the second time, the checks may come from memory
        writer.write(b"GET /bytearrays HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = await read_response(reader)
        assert (status, headers["x-kind"], body) == (200, "bytearray", b"ok")
    writer.write(b"GET /bad-header HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_percent_encoded_path(url: str) -> None:
    reader, writer = await connect(url)
    request = b"GET /a%20b%2Fc HTTP/1.1\r\nHost: x\r\n\r\n"
    assert await body_of(reader, writer, request) == b"GET /a b/c  "
    writer.close()


async def test_forwarded_headers_from_a_trusted_proxy_are_applied(url: str) -> None:
    # uvicorn's proxy-headers middleware runs only for requests that carry them.
    reader, writer = await connect(url)
    for headers, seen in [
        (b"", b"127.0.0.1 http"),
        (b"X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n", b"203.0.113.9 https"),
        (b"x-forwarded-proto: https\r\n", b"127.0.0.1 https"),
        (b"", b"127.0.0.1 http"),
    ]:
        request = b"GET /client HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n"
        assert await body_of(reader, writer, request) == b"GET /client  " + seen
    writer.close()


async def test_client_disconnect_reaches_the_app() -> None:
    seen: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def waits(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()  # the (empty) body
        seen.set_result(await receive())  # then: wait until the client goes away

    async with running(App({}, asgi=waits)) as base:
        reader, writer = await connect(base)
        writer.write(GET)
        await asyncio.sleep(0.1)
        writer.close()
        assert await asyncio.wait_for(seen, 5) == {"type": "http.disconnect"}


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5000)}.get(name, default)


async def test_a_response_leaves_in_one_write() -> None:
    """Status line, headers and body go out together (one system call, one
    segment), the point of this protocol."""
    config = uvicorn.Config(echo, lifespan="off", proxy_headers=False, ws="none")
    protocol = HttpProtocol(config, ServerState(), {}, asyncio.get_running_loop())
    transport = _Transport()
    protocol.connection_made(transport)
    protocol.data_received(GET)
    for _ in range(10):
        await asyncio.sleep(0)
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b"\r\n\r\nGET /path q=1 ")
