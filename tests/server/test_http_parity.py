"""One HTTP/1.1 suite, run on a real server on loopback against Roost's protocol
(``roost.server._http1``) and against uvicorn's own (``httptools`` and ``h11``).

Each case states the right answer (serve correctly, or refuse with a 4xx and
close the connection, without the app ever seeing a smuggled request).  Roost's
protocol must give it everywhere; where one of uvicorn's protocols does not, the
case is marked ``xfail(strict=True)`` for that protocol only, with the reason
(:data:`UVICORN_DIVERGES`): a uvicorn release that starts answering right makes
the mark fail, so the table stays true.

``tests/server/test_uvicorn_versions.py`` runs this file again against the
lowest uvicorn the project allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import pytest
from _pytest.mark import ParameterSet

from roost import App
from roost.server import running
from tests.hostile.test_http_limits import _close_connections, closed, connect

__all__ = ["_close_connections"]  # (its autouse fixture closes what ``connect`` opened)

pytestmark = pytest.mark.integration  # real servers on 127.0.0.1

#: "roost" is Roost's protocol (the default); the others are uvicorn's own.
PROTOCOLS: Final = ("roost", "httptools", "h11")

_NO_HEAD_BOUND = (
    "uvicorn's httptools protocol puts no bound on a header block: it reads and holds all of it"
)
_H11_HEAD_BOUND = (
    "h11 bounds only the part of a head still incomplete after a read (16 KiB): a larger "
    "head that arrives in one read is served, however large"
)
_H11_NO_HEADER_COUNT = "h11 bounds a head's size but not how many header fields it has"
_H11_CL_AND_TE = (
    "h11 reads a request with both Content-Length and Transfer-Encoding by its chunks and "
    "keeps the connection open, so the bytes a Content-Length reader would take for the body "
    "are served as the next request (RFC 9112 6.3: close after such a request, or refuse it)"
)
_NO_HOST_CHECK = (
    "uvicorn's httptools protocol serves an HTTP/1.1 request without a Host and one with two "
    "(RFC 9112 3.2: 400); h11 refuses both"
)
_NO_HEAD_TIMEOUT = (
    "uvicorn's protocols have no header timeout: a client that stops halfway through a "
    "head holds the connection (its keep-alive timer is cancelled by the first byte)"
)

#: (protocol, case) -> why uvicorn's protocol gives another answer than the right one.
#: Never a "roost" key: Roost's protocol is fixed instead.
UVICORN_DIVERGES: Final[dict[tuple[str, str], str]] = {
    ("httptools", "no-host"): _NO_HOST_CHECK,
    ("httptools", "two-hosts"): _NO_HOST_CHECK,
    ("h11", "cl-and-te"): _H11_CL_AND_TE,
    ("h11", "te-and-cl"): _H11_CL_AND_TE,
    ("h11", "url-over-64k"): _H11_HEAD_BOUND,
    ("h11", "header-over-64k"): _H11_HEAD_BOUND,
    ("httptools", "header-over-64k"): _NO_HEAD_BOUND,
    ("httptools", "200-headers"): _NO_HEAD_BOUND,
    ("h11", "200-headers"): _H11_NO_HEADER_COUNT,
    ("httptools", "stalled-head"): _NO_HEAD_TIMEOUT,
    ("h11", "stalled-head"): _NO_HEAD_TIMEOUT,
}
assert not any(protocol == "roost" for protocol, _ in UVICORN_DIVERGES)


def params(cases: Iterable[str]) -> list[ParameterSet]:
    """(protocol, case) for every protocol and case, uvicorn's divergences marked."""
    out = []
    for case in cases:
        for protocol in PROTOCOLS:
            reason = UVICORN_DIVERGES.get((protocol, case))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            out.append(pytest.param(protocol, case, id=f"{protocol}-{case}", marks=marks))
    return out


# -- the server ------------------------------------------------------------------------


class Echo:
    """An ASGI app answering ``METHOD PATH [x-folded] BODY`` with a length, and
    recording every path it was asked for (``/slow`` answers after a pause, so
    that pipelined requests queue behind it)."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.paths.append(scope["path"])
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/slow":
            await asyncio.sleep(0.05)
        folded = [value for name, value in scope["headers"] if name == b"x-folded"]
        text = b" ".join([scope["method"].encode(), scope["path"].encode(), *folded, body])
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(text))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": text})


class Server:
    """A real server (``running``) in a thread of its own, with its own loop, for
    a whole module: starting and stopping one per test would cost more than all
    the cases together."""

    def __init__(self, protocol: str, **options: Any) -> None:
        if protocol != "roost":  # Roost's protocol is make_config's default
            options["http"] = protocol
        self.app = Echo()
        self.options = options
        self.url = ""
        self._started = threading.Event()
        self._failed: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with running(App({}, asgi=self.app), **self.options) as url:
                self.url = url
                self._started.set()
                await self._stop.wait()
        except BaseException as exc:
            self._failed = exc
            raise
        finally:
            self._started.set()

    def __enter__(self) -> Server:
        self._thread.start()
        self._started.wait(10)
        if not self.url:
            raise RuntimeError(f"the server did not start: {self._failed!r}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def send(self, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A new connection (closed after the test) with ``data`` written to it."""
        reader, writer = await connect(self.url)
        writer.write(data)
        return reader, writer


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Server]]:
    """One server per protocol; header timeout 2 s, so a slow client is served."""
    with contextlib.ExitStack() as stack:
        yield {
            protocol: stack.enter_context(Server(protocol, header_timeout=2.0))
            for protocol in PROTOCOLS
        }


# -- reading responses -----------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_response(
    reader: asyncio.StreamReader, *, head_only: bool = False, within: float = 5.0
) -> Response:
    """The next response: its body by Content-Length, by chunks, or up to the
    close (none for ``head_only``: HEAD or an interim 100)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), within)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = b""
    if head_only:
        pass
    elif "content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)).strip(), 16)
            chunk = await asyncio.wait_for(reader.readexactly(size + 2), 5)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = await asyncio.wait_for(reader.read(), 5)  # delimited by the close
    return Response(int(lines[0].split()[1]), headers, body)


# -- hostile heads and bodies: refused with a 4xx and closed -------------------------------

#: The request hidden behind each hostile one (made ``/smuggled-CASE`` in the test:
#: the servers serve the whole module).
SMUGGLED: Final = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

#: case -> (request bytes, the refusals that are right).  Every request carries a
#: second one after it that a server misreading the framing would serve.
REFUSED: Final[dict[str, tuple[bytes, frozenset[int]]]] = {
    # RFC 9112 6.3: both framings in one message is a smuggling attempt.
    "cl-and-te": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        frozenset({400}),
    ),
    "te-and-cl": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 40\r\n\r\n0\r\n\r\n" + SMUGGLED,
        frozenset({400}),
    ),
    "two-content-lengths": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\n"
        b"abc" + SMUGGLED,
        frozenset({400}),
    ),
    "content-length-list": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 40\r\n\r\nabc" + SMUGGLED,
        frozenset({400}),
    ),
    "content-length-sign": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc" + SMUGGLED,
        frozenset({400}),
    ),
    # RFC 9112 6.3: a request whose last transfer coding is not chunked has no
    # length that can be known: 400 and close.
    "te-not-chunked": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n" + SMUGGLED,
        frozenset({400}),
    ),
    # RFC 9112 5.1: whitespace before the colon must be refused.
    "space-before-colon": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        frozenset({400}),
    ),
    "chunk-size-not-hex": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n"
        b"0\r\n\r\n" + SMUGGLED,
        frozenset({400}),
    ),
    "chunk-size-negative": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n"
        b"0\r\n\r\n" + SMUGGLED,
        frozenset({400}),
    ),
    # 2**80: a parser that wraps around would read a small size.
    "chunk-size-overflow": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"100000000000000000003\r\nabc\r\n0\r\n\r\n" + SMUGGLED,
        frozenset({400}),
    ),
    "chunk-without-crlf": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY"
        b"0\r\n\r\n" + SMUGGLED,
        frozenset({400}),
    ),
    # RFC 9112 3.2: refuse an HTTP/1.1 request without a Host, or any with two.
    "no-host": (b"GET /a HTTP/1.1\r\n\r\n", frozenset({400})),
    "two-hosts": (b"GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", frozenset({400})),
    # RFC 9112 2.2: a bare CR is refused (it would end the line for another parser).
    "bare-cr": (
        b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\rContent-Length: 40\r\n\r\n" + SMUGGLED,
        frozenset({400}),
    ),
    "nul-in-value": (b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", frozenset({400})),
    # Over Roost's 64 KiB defaults (h11 refuses a head over 16 KiB with 400).
    "url-over-64k": (
        b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        frozenset({400, 414}),
    ),
    "header-over-64k": (
        b"GET /a HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
        frozenset({400, 431}),
    ),
    "200-headers": (
        b"GET /a HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: v\r\n" % i for i in range(200))
        + b"\r\n",
        frozenset({400, 431}),
    ),
}


@pytest.mark.parametrize(("protocol", "case"), params(REFUSED))
async def test_hostile_request_is_refused_and_closed(
    servers: dict[str, Server], protocol: str, case: str
) -> None:
    request, statuses = REFUSED[case]
    smuggled = f"/smuggled-{case}"
    server = servers[protocol]
    reader, _ = await server.send(request.replace(b"/smuggled", smuggled.encode()))
    response = await read_response(reader)
    assert response.status in statuses, response
    assert await closed(reader)
    assert smuggled not in server.app.paths


# -- obsolete line folding -----------------------------------------------------------------


@pytest.mark.parametrize(("protocol", "case"), params(["obs-fold"]))
async def test_obsolete_line_folding_is_refused_or_unfolded(
    servers: dict[str, Server], protocol: str, case: str
) -> None:
    """RFC 9112 5.2: a folded header line is refused (400) or joined with a space;
    never read as a header of its own, nor passed on with its CR LF."""
    reader, _ = await servers[protocol].send(
        b"GET /a HTTP/1.1\r\nHost: x\r\nX-Folded: one\r\n two\r\nContent-Length: 0\r\n\r\n"
    )
    response = await read_response(reader)
    if response.status == 400:
        assert await closed(reader)
    else:
        assert (response.status, response.body) == (200, b"GET /a one two ")


# -- what must be served --------------------------------------------------------------------


@pytest.mark.parametrize(("protocol", "case"), params(["pipelined"]))
async def test_pipelined_requests_are_answered_in_order(
    servers: dict[str, Server], protocol: str, case: str
) -> None:
    """Five requests in one write, bodies by length and by chunks, the first slow:
    five answers in order, each with its own body."""
    reader, _ = await servers[protocol].send(
        b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\none"
        b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /three HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nth\r\n3\r\nree\r\n0\r\n\r\n"
        b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nfour"
        b"GET /five HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    bodies = [(await read_response(reader)).body for _ in range(5)]
    assert bodies == [
        b"POST /slow one",
        b"GET /two ",
        b"POST /three three",
        b"POST /slow four",
        b"GET /five ",
    ]


@pytest.mark.parametrize(("protocol", "case"), params(["after-close"]))
async def test_nothing_is_served_after_connection_close(
    servers: dict[str, Server], protocol: str, case: str
) -> None:
    """A request pipelined behind ``Connection: close`` is not served."""
    server = servers[protocol]
    reader, _ = await server.send(
        b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        + SMUGGLED.replace(b"/smuggled", b"/after-close")
    )
    response = await read_response(reader)
    assert (response.status, response.body) == (200, b"GET /a ")
    assert await closed(reader)
    assert "/after-close" not in server.app.paths


@pytest.mark.parametrize(("protocol", "case"), params(["one-byte-at-a-time"]))
async def test_a_slow_client_is_served(
    servers: dict[str, Server], protocol: str, case: str
) -> None:
    """A request sent a byte at a time, well within the header timeout (2 s)."""
    reader, writer = await connect(servers[protocol].url)
    for byte in b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello":
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.001)  # (pacing: each byte its own read)
    response = await read_response(reader)
    assert (response.status, response.body) == (200, b"POST /a hello")


@pytest.mark.parametrize(("protocol", "case"), params(["stalled-head"]))
async def test_a_head_that_stops_halfway_is_answered_408(protocol: str, case: str) -> None:
    """A client that sends half a head and then nothing (slowloris) is answered
    408 and closed once the header timeout (here 0.3 s) has passed."""
    with Server(protocol, header_timeout=0.3, timeout_keep_alive=0.3) as server:
        reader, writer = await server.send(b"GET /a HTTP/1.1\r\nHost: x\r\n")
        try:
            # (Bounded, so that a protocol without the timeout fails in 1 s.)
            response = await read_response(reader, within=1.0)
        except (TimeoutError, asyncio.IncompleteReadError) as exc:
            raise AssertionError("no 408 answer to the stalled head") from exc
        assert response.status == 408
        assert await closed(reader)
        # The refused connection lingers until the client closes its side
        # (roost.server.linger); close it before the server's loop ends.
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(("protocol", "case"), params(["keep-alive"]))
async def test_keep_alive_serves_requests_on_one_connection(
    servers: dict[str, Server], protocol: str, case: str
) -> None:
    reader, writer = await connect(servers[protocol].url)
    for i in range(4):
        writer.write(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
        response = await read_response(reader)
        assert (response.status, response.body) == (200, b"GET /%d " % i)
        assert response.headers.get("connection", "keep-alive") != "close"


@pytest.mark.parametrize(("protocol", "case"), params(["http-1.0"]))
async def test_http10_is_served_and_closed(
    servers: dict[str, Server], protocol: str, case: str
) -> None:
    reader, _ = await servers[protocol].send(b"POST /a HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi")
    response = await read_response(reader)
    assert (response.status, response.body) == (200, b"POST /a hi")
    assert await closed(reader)


@pytest.mark.parametrize(("protocol", "case"), params(["expect-100-continue"]))
async def test_expect_100_continue(servers: dict[str, Server], protocol: str, case: str) -> None:
    """The interim 100 comes before the client sends its body."""
    reader, writer = await servers[protocol].send(
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
    )
    interim = await read_response(reader, head_only=True)
    assert interim.status == 100
    writer.write(b"abc")
    response = await read_response(reader)
    assert (response.status, response.body) == (200, b"POST /a abc")


@pytest.mark.parametrize(("protocol", "case"), params(["head"]))
async def test_head_gets_headers_without_a_body(
    servers: dict[str, Server], protocol: str, case: str
) -> None:
    reader, _ = await servers[protocol].send(
        b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /g HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    head = await read_response(reader, head_only=True)
    assert (head.status, head.headers["content-length"]) == (200, "8")  # b"HEAD /h "
    # No body follows: the next bytes are the next response.
    response = await read_response(reader)
    assert (response.status, response.body) == (200, b"GET /g ")
