"""Roost's HTTP/1.1 protocol for uvicorn: the same ASGI contract, a third of the cost.

uvicorn runs the parsing (httptools), the sockets and the server's lifecycle
well, but its per-request bookkeeping costs more than a durable increment does:
measured on one core, an ASGI app that only returns a counter serves about
26,000 requests/s on uvicorn's ``httptools`` protocol and about 53,000 on a
protocol that does the same HTTP with less ceremony (``benchmarks/README.md``).
The difference is spent on a second ``write`` per response (headers and body
go out separately), a timer armed and cancelled for every request, an
``asyncio.Event`` and a large cycle object per request, and the proxy-headers
middleware.  This protocol keeps uvicorn's behaviour (it plugs in as
``uvicorn.Config(http=HttpProtocol)`` and honours the same settings) and spends
less per request:

* the status line, headers and body of a response leave in **one write** when
  the app sends them in the same turn of the loop (a streaming response whose
  first chunk comes later gets its headers at the end of the turn);
* the keep-alive timeout uses **one timer per connection**, re-armed only when
  it fires, instead of one per request;
* a request waits for its body on a plain future made only when it has to wait.

Pipelined requests are answered in order (reading pauses while one is queued),
``Expect: 100-continue`` is honoured, responses without a length are chunked,
and a WebSocket upgrade hands the connection to the configured WebSocket
protocol (:mod:`roost.server.protocol`).

Hostile input meets the bounds of :class:`~roost.server.limits.ServerLimits`
before the app sees it: a request target over ``max_url_bytes`` is answered
414, a header block over ``max_header_bytes`` or ``max_headers`` 431, a body
over ``max_body_bytes`` 413 (from its Content-Length, else once the chunks
pass it), headers unfinished ``header_timeout`` after accept (or after the
request's first byte) 408; an HTTP/0.9 request, a request without exactly one
Host header (an HTTP/1.0 one may have none) or a path whose %-escapes are not
UTF-8 400.  httptools (llhttp, strict) refuses with 400 what could frame a
request two ways: Content-Length with Transfer-Encoding, two Content-Lengths,
a bad chunk size, a bare CR, obsolete line folding.  Each answer closes the
connection.  A connection beyond uvicorn's ``limit_concurrency`` is answered
503 as soon as it is accepted.  ``tests/server/test_http_parity.py`` runs the
framing, bounds and timeout cases against uvicorn's own protocols too, and
lists where they answer otherwise.

This module is private: it builds on uvicorn internals (``ServerState``, its
proxy-headers middleware, ``protocols.utils``, ``flow_control``) that change
between releases, so it is tested against the uvicorn versions in
:data:`UVICORN_VERSIONS`, the ends of the range pyproject.toml allows.
"""

from __future__ import annotations

import asyncio
import contextvars
import http
import logging
import re
import urllib.parse
import weakref
from collections import deque
from typing import Any, Final, cast

import httptools
import uvicorn
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.utils import (
    get_client_addr,
    get_local_addr,
    get_path_with_query_string,
    get_remote_addr,
    is_ssl,
)
from uvicorn.server import ServerState

from .limits import limits_of
from .linger import linger

__all__ = ["UVICORN_VERSIONS", "HttpProtocol"]

#: The uvicorn releases this module is tested with: the lowest and the newest
#: that pyproject.toml's range allows.  scripts/install puts the newest in the
#: venv and the lowest in ``.venv/uvicorn-lowest``; the HTTP tests run against
#: both, and fail when another release is installed
#: (``tests/server/test_uvicorn_versions.py``).
UVICORN_VERSIONS: Final = ("0.35.0", "0.54.0")

log = logging.getLogger("uvicorn.error")
access_log = logging.getLogger("uvicorn.access")

#: Request body bytes buffered before reading pauses (until the app reads them).
_BODY_HIGH_WATER: Final = 64 * 1024

#: A header name must be an RFC 9110 token; a value may hold no control
#: character other than tab (a CR or LF would split the response).
_BAD_NAME: Final = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")
_BAD_VALUE: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
#: Header names (to their lower case) and values already found valid: a
#: response's usual headers then cost a lookup rather than a regex search each.
#: Bounded, so a server echoing arbitrary values just keeps checking them.
_CHECKED_NAMES: Final[dict[bytes, bytes]] = {}
_CHECKED_VALUES: Final[set[bytes]] = set()
_CHECKED_MAX: Final = 4096


def _status_line(code: int) -> bytes:
    try:
        phrase = http.HTTPStatus(code).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {code} {phrase}\r\n".encode()


_STATUS_LINES: Final = {code: _status_line(code) for code in range(100, 600)}
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK: Final = b"0\r\n\r\n"
_NO_BODY_STATUS: Final = frozenset((204, 304))
_DISCONNECT: Final = {"type": "http.disconnect"}


class _Refused(Exception):
    """Raised in a parser callback to stop parsing and answer ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _decoded_path(raw_path: bytes) -> str:
    path = raw_path.decode("ascii")
    if "%" not in path:
        return path
    try:
        return urllib.parse.unquote(path, errors="strict")
    except UnicodeDecodeError:
        # Decoding with replacement would map /a/%ff and /a/%fe to one object.
        raise _Refused(400, "The path's %-escapes are not UTF-8.") from None


class HttpProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection serving an ASGI app (uvicorn's protocol interface).

    Constructed by uvicorn for each connection from ``Config(http=HttpProtocol)``.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.app = config.loaded_app
        # uvicorn's proxy-headers middleware (outermost when enabled) changes
        # nothing unless a request carries X-Forwarded-For or -Proto; requests
        # without them skip it and its scan of every header.
        self.unproxied_app = self.app.app if type(self.app) is ProxyHeadersMiddleware else self.app
        self.loop = _loop or asyncio.get_event_loop()
        self.held_heads = _held_heads(self.loop)
        self.server_state = server_state
        self.app_state = app_state
        self.root_path: str = config.root_path
        self.ws_protocol_class: type[asyncio.Protocol] | None = config.ws_protocol_class
        self.keep_alive_timeout: float = config.timeout_keep_alive
        # (uvicorn 0.36 added the setting; under 0.35 there is none to honour.)
        self.reset_contextvars: bool = getattr(config, "reset_contextvars", False)
        limits, _ = limits_of(config)
        self.header_timeout = limits.header_timeout
        self.max_url_bytes = limits.max_url_bytes
        self.max_header_bytes = limits.max_header_bytes
        self.max_headers = limits.max_headers
        self.max_body_bytes = limits.max_body_bytes
        self.access_log = access_log.hasHandlers()
        self.parser = self._new_parser()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.server: tuple[str, int | None] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "http"
        # The request being parsed (its body callbacks land here) and the one
        # whose response is being written; they differ while requests are
        # pipelined, and the ones in between wait in ``queued``.
        self.parsing: _Exchange | None = None
        self.current: _Exchange | None = None
        self.queued: deque[_Exchange] = deque()
        self.url: bytes | bytearray = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.content_length = 0
        self.hosts = 0  # Host header lines in the request being parsed
        # While a request head is being read: when it began (from accept for
        # the first), and the bytes of the reads that fell wholly inside it
        # (httptools holds a header being read where on_header cannot count it).
        self.head_since: float | None = None
        self.head_bytes = 0
        self.messages = 0  # requests begun on this connection
        self.expect_continue = False
        self.upgrade: bytes | None = None
        self.forwarded = False  # the request carries X-Forwarded-For or -Proto
        self.reading_paused = False
        self.writing_paused = False
        self.drained: asyncio.Future[None] | None = None
        self.idle_since: float | None = None  # None while a request is under way
        # One timer per connection for both the keep-alive and the header
        # timeouts; ``timer_due`` is when it fires.
        self.timer: asyncio.TimerHandle | None = None
        self.timer_due = 0.0

    def _new_parser(self) -> httptools.HttpRequestParser:
        parser = httptools.HttpRequestParser(self)
        # Answer the first of several pipelined requests even when a later one
        # arrives after "Connection: close" (as uvicorn does).
        parser.set_dangerous_leniencies(lenient_data_after_close=True)
        return parser

    # -- connection events -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.server_state.connections.add(self)  # type: ignore[arg-type]
        self.transport = transport
        self.server = get_local_addr(transport)
        self.client = get_remote_addr(transport)
        self.scheme = "https" if is_ssl(transport) else "http"
        limit = self.config.limit_concurrency
        # (>=, as uvicorn counts: this connection's request would get 503 anyway.)
        if limit is not None and len(self.server_state.connections) >= limit:
            # Refused at once rather than at its first request: a connection
            # held until then would keep a descriptor the server may not have.
            log.warning("Exceeded concurrency limit.")
            self._refuse(503, "Service Unavailable: too many connections.")
            return
        self.head_since = self.loop.time()
        self._arm(self.head_since + self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        if exc is None:
            self.transport.close()

    def _forget(self) -> None:
        """Leave the connection: it is gone, or another protocol has it now."""
        self.server_state.connections.discard(self)
        for exchange in (self.current, *self.queued):
            if exchange is not None:
                exchange.lost()
        self.queued.clear()
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def eof_received(self) -> None:
        return None  # the transport closes itself

    def data_received(self, data: bytes) -> None:
        self.idle_since = None
        in_head = self.head_since is not None
        messages = self.messages
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = upgrade.args[0] if upgrade.args else len(data)
            self._upgraded(data[offset:])
            return
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__
            if isinstance(refused, _Refused):
                log.warning("Request refused (%d): %s", refused.status, refused.message)
                self._refuse(refused.status, refused.message)
                return
            log.warning("Invalid HTTP request received: %s", exc)
            self._refuse(400, "Invalid HTTP request received.")
            return
        except httptools.HttpParserError as exc:
            log.warning("Invalid HTTP request received: %s", exc)
            self._refuse(400, "Invalid HTTP request received.")
            return
        if in_head and self.head_since is not None and messages == self.messages:
            # The whole read belongs to one unfinished head.
            self.head_bytes += len(data)
            if self.head_bytes > self.max_url_bytes + self.max_header_bytes:
                log.warning("Request refused (431): the request head is too large")
                self._refuse(431, "Request Header Fields Too Large")

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        self.drained = None

    async def drain(self) -> None:
        """Wait until the transport takes more data (the client reads again)."""
        if self.drained is None:
            self.drained = self.loop.create_future()
        await self.drained

    def pause_reading(self) -> None:
        if not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()

    def shutdown(self) -> None:
        """Graceful stop (called by uvicorn): close when idle, else after the response."""
        if self.current is None or self.current.complete:
            self.transport.close()
        else:
            self.current.keep_alive = False
            self.queued.clear()

    # -- parser callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.header_bytes = 0
        self.content_length = 0
        self.hosts = 0
        self.expect_continue = False
        self.upgrade = None
        self.forwarded = False
        self.messages += 1
        self.head_bytes = 0
        if self.head_since is None:  # a later request on a kept-alive connection
            self.head_since = now = self.loop.time()
            self._arm(now + self.header_timeout)

    def on_url(self, url: bytes) -> None:
        if not self.url:
            self.url = url
            if len(url) > self.max_url_bytes:
                raise _Refused(414, "URI Too Long")
            return
        if len(self.url) + len(url) > self.max_url_bytes:
            raise _Refused(414, "URI Too Long")
        # A URL in many reads: extended in place, as bytes concatenation
        # would copy all of it for each piece.
        if type(self.url) is bytes:
            self.url = bytearray(self.url)
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value)
        if len(self.headers) >= self.max_headers or self.header_bytes > self.max_header_bytes:
            raise _Refused(431, "Request Header Fields Too Large")
        name = name.lower()
        if name == b"host":  # (first: nearly every request's first header)
            self.hosts += 1
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_continue = True
        elif name == b"upgrade":
            self.upgrade = value.lower()
        elif name == b"x-forwarded-for" or name == b"x-forwarded-proto":
            self.forwarded = True
        elif name == b"content-length" and value.isdigit():
            # (The parser has refused a malformed or repeated length already.)
            self.content_length = int(value)
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_since = None
        parser = self.parser
        method = parser.get_method().decode("ascii")
        version = parser.get_http_version()
        if version == "0.9":
            # httptools parses a request line without a version as HTTP/0.9,
            # which has no headers and no status line to answer with.
            raise _Refused(400, "HTTP/0.9 is not supported.")
        if self.hosts != 1 and (self.hosts or version != "1.0"):
            # RFC 9112 3.2: an HTTP/1.1 request without a Host, or any request
            # with two, is refused; with two, a proxy and the app could each
            # take a different one for the request's authority.
            raise _Refused(400, "A request needs exactly one Host header.")
        url = httptools.parse_url(self.url)
        raw_path = url.path
        path = _decoded_path(raw_path)
        if (
            self.upgrade == b"websocket"
            and self.ws_protocol_class is not None
            and parser.should_upgrade()
        ):
            return  # data_received hands the connection over
        if self.content_length > self.max_body_bytes:
            raise _Refused(413, "Content Too Large")
        root = self.root_path
        scope = {
            "type": "http",
            "asgi": {"version": self.config.asgi_version, "spec_version": "2.3"},
            "http_version": version,
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "method": method,
            "root_path": root,
            "path": root + path if root else path,
            "raw_path": root.encode("ascii") + raw_path if root else raw_path,
            "query_string": url.query or b"",
            "headers": self.headers,
            "state": self.app_state.copy(),
        }
        keep_alive = version != "1.0" and parser.should_keep_alive()
        app = self.app if self.forwarded else self.unproxied_app
        exchange = _Exchange(self, scope, keep_alive, self.expect_continue, app)
        self.parsing = exchange
        if self.current is None:
            self._start(exchange)
        else:
            # Pipelined: answered in order; read no further until it is its turn.
            self.queued.append(exchange)
            self.pause_reading()

    def on_body(self, body: bytes) -> None:
        exchange = self.parsing
        if exchange is None or exchange.complete:
            return
        exchange.received += len(body)
        if exchange.received > self.max_body_bytes:
            raise _Refused(413, "Content Too Large")
        exchange.body += body
        if len(exchange.body) > _BODY_HIGH_WATER:
            self.pause_reading()
        exchange.wake()

    def on_message_complete(self) -> None:
        exchange = self.parsing
        if exchange is None or exchange.complete:
            return
        exchange.more_body = False
        exchange.wake()

    # -- running requests --------------------------------------------------------------

    def _start(self, exchange: _Exchange) -> None:
        self.current = exchange
        app = exchange.app
        limit = self.config.limit_concurrency
        state = self.server_state
        if limit is not None and (len(state.connections) >= limit or len(state.tasks) >= limit):
            log.warning("Exceeded concurrency limit.")
            app = service_unavailable
        if self.reset_contextvars:
            task = self.loop.create_task(exchange.run(app), context=contextvars.Context())
        else:
            task = self.loop.create_task(exchange.run(app))
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)

    def response_done(self, exchange: _Exchange) -> None:
        """``exchange`` sent its whole response: start the next one, or wait idle."""
        self.server_state.total_requests += 1
        if exchange is not self.current:
            return
        self.current = None
        if self.transport.is_closing():
            return
        if not exchange.keep_alive:
            self.transport.close()
            return
        if self.queued:
            next_exchange = self.queued.popleft()
            if not self.queued:
                self.resume_reading()
            self._start(next_exchange)
            return
        self.resume_reading()
        self.idle_since = now = self.loop.time()
        self._arm(now + self.keep_alive_timeout)

    def _arm(self, due: float) -> None:
        """Have the connection's timer fire by ``due``."""
        timer = self.timer
        if timer is not None:
            if self.timer_due <= due:
                return  # it fires first and then waits out the rest
            timer.cancel()
        self.timer_due = due
        self.timer = self.loop.call_at(due, self._check_timeouts)

    def _check_timeouts(self) -> None:
        # One timer per connection: when it fires, close a connection idle for
        # the whole keep-alive timeout or one whose head is overdue, else wait
        # for the nearer of the two deadlines still running.
        self.timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self.head_since is not None:
            if now >= self.head_since + self.header_timeout:
                self._head_timed_out()
                return
            self._arm(self.head_since + self.header_timeout)
        if self.idle_since is not None:
            if now >= self.idle_since + self.keep_alive_timeout:
                self.transport.close()
                return
            self._arm(self.idle_since + self.keep_alive_timeout)
        # Neither: busy, and re-armed when the current response completes.

    def _head_timed_out(self) -> None:
        if self.current is not None:
            # A pipelined head stalled behind a response being written: that
            # response is the last.
            self.current.keep_alive = False
            self.queued.clear()
            self.pause_reading()
            return
        log.warning("Request refused (408): headers not received in time")
        self._refuse(408, "Request Timeout")

    def _refuse(self, status: int, message: str) -> None:
        # The app of a request under way hears that the client is gone, and
        # nothing it still sends goes out.
        current = self.current
        for exchange in (current, *self.queued):
            if exchange is not None:
                exchange.lost()
        self.queued.clear()
        if self.transport.is_closing() or (current is not None and current.started):
            self.transport.close()  # its response began: an error status cannot follow
            return
        body = message.encode()
        head = [_STATUS_LINES[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(
            b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % len(body)
        )
        self.transport.write(b"".join(head) + body)
        linger(self.transport, then=self._forget)

    def _upgraded(self, rest: bytes) -> None:
        ws_class = self.ws_protocol_class
        if self.upgrade != b"websocket" or ws_class is None:
            # An upgrade we do not speak (e.g. h2c): the request was served as
            # plain HTTP; go on parsing what follows it.
            if self.upgrade is not None:
                log.warning("Unsupported upgrade request.")
            self.parser = self._new_parser()
            if rest:
                self.data_received(rest)
            return
        self.server_state.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        method = self.parser.get_method()
        request = [method, b" ", self.url, b" HTTP/1.1\r\n"]
        for name, value in self.headers:
            request += [name, b": ", value, b"\r\n"]
        request.append(b"\r\n")
        protocol = ws_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.app_state
        )
        protocol.connection_made(self.transport)
        protocol.data_received(b"".join(request) + rest)
        self.transport.set_protocol(protocol)


class _Exchange:
    """One request and its response: the ASGI ``receive`` and ``send`` of one call."""

    __slots__ = (
        "protocol",
        "scope",
        "keep_alive",
        "expect_continue",
        "body",
        "more_body",
        "body_taken",
        "waiter",
        "disconnected",
        "started",
        "complete",
        "chunked",
        "remaining",
        "head",
        "app",
        "received",
    )

    def __init__(
        self,
        protocol: HttpProtocol,
        scope: dict[str, Any],
        keep_alive: bool,
        expect_continue: bool,
        app: Any,
    ) -> None:
        self.protocol = protocol
        self.scope = scope
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.body = bytearray()
        self.more_body = True
        self.body_taken = False  # the last http.request message was handed out
        self.waiter: asyncio.Future[None] | None = None
        self.disconnected = False
        self.started = False
        self.complete = False
        self.chunked = False
        self.remaining: int | None = None  # Content-Length not yet sent
        self.head: bytes | None = None  # status line and headers not yet written
        self.app = app  # what serves it (see HttpProtocol.unproxied_app)
        self.received = 0  # body bytes read from the client

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def lost(self) -> None:
        if not self.complete:
            self.disconnected = True
        self.wake()

    async def run(self, app: Any) -> None:
        try:
            result = await app(self.scope, self.receive, self.send)
        except Exception as exc:
            log.error("Exception in ASGI application\n", exc_info=exc)
            if not self.started:
                await self._send_500()
            else:
                self.protocol.transport.close()
        except BaseException:
            self.protocol.transport.close()  # cancelled: the response cannot finish
            raise
        else:
            if result is not None:
                log.error("ASGI callable should return None, but returned '%s'.", result)
                self.protocol.transport.close()
            elif not self.started and not self.disconnected:
                log.error("ASGI callable returned without starting response.")
                await self._send_500()
            elif not self.complete and not self.disconnected:
                log.error("ASGI callable returned without completing response.")
                self.protocol.transport.close()

    async def _send_500(self) -> None:
        await self.send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"connection", b"close"),
                ],
            }
        )
        await self.send({"type": "http.response.body", "body": b"Internal Server Error"})

    # -- ASGI ------------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        protocol = self.protocol
        if self.expect_continue and not protocol.transport.is_closing():
            self.expect_continue = False
            protocol.transport.write(_CONTINUE)
        while not (self.disconnected or self.complete):
            if self.body or (not self.more_body and not self.body_taken):
                body, self.body = bytes(self.body), bytearray()
                self.body_taken = not self.more_body
                if self is protocol.current:
                    protocol.resume_reading()
                return {"type": "http.request", "body": body, "more_body": self.more_body}
            # Wait for more of the body, or (once it has all been read) for the
            # client to go away or the response to finish.
            if self is protocol.current:
                protocol.resume_reading()
            waiter = self.waiter = protocol.loop.create_future()
            await waiter
        return _DISCONNECT

    async def send(self, message: dict[str, Any]) -> None:
        protocol = self.protocol
        if protocol.writing_paused and not self.disconnected:
            await protocol.drain()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.started:
            if kind != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', not '{kind}'.")
            self._start_response(message["status"], message.get("headers", ()))
            return
        if self.complete:
            raise RuntimeError(f"Unexpected ASGI message '{kind}' after the response completed.")
        if kind != "http.response.body":
            raise RuntimeError(f"Expected ASGI message 'http.response.body', not '{kind}'.")
        body: bytes = message.get("body", b"")
        more_body: bool = message.get("more_body", False)
        if self.scope["method"] == "HEAD":
            data = b""
        elif self.chunked:
            data = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
            if not more_body:
                data += _LAST_CHUNK
        else:
            data = body
            if self.remaining is not None:
                if len(body) > self.remaining:
                    raise RuntimeError("Response content longer than Content-Length")
                self.remaining -= len(body)
        head = self.head
        if head is not None:
            self.head = None
            data = head + data
        if data:
            protocol.transport.write(data)
        if more_body:
            return
        if self.remaining and self.scope["method"] != "HEAD":
            raise RuntimeError("Response content shorter than Content-Length")
        self.complete = True
        self.wake()
        protocol.response_done(self)

    def _start_response(self, status: int, headers: Any) -> None:
        self.started = True
        self.expect_continue = False  # no 100 Continue once the answer is known
        protocol = self.protocol
        if protocol.access_log:
            scope = self.scope
            access_log.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(scope),  # type: ignore[arg-type]
                scope["method"],
                get_path_with_query_string(scope),  # type: ignore[arg-type]
                scope["http_version"],
                status,
            )
        try:
            line = _STATUS_LINES[status]
        except (KeyError, TypeError):
            raise RuntimeError(f"Invalid HTTP status code {status!r}.") from None
        out = [line]
        for name, value in protocol.server_state.default_headers:
            out += [name, b": ", value, b"\r\n"]
        close_sent = False
        for name, value in headers:
            # (A bytearray, which ASGI servers accept too, is checked every time.)
            lowered = _CHECKED_NAMES.get(name) if type(name) is bytes else None
            if lowered is None:
                lowered = _checked_name(name)
            name = lowered
            if type(value) is not bytes or value not in _CHECKED_VALUES:
                _check_value(value)
            if name == b"content-length" and not self.chunked and self.remaining is None:
                self.remaining = int(value)
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self.chunked = True
                self.remaining = None
            elif name == b"connection" and b"close" in [
                token.strip().lower() for token in value.split(b",")
            ]:
                self.keep_alive = False
                close_sent = True
            out += [name, b": ", value, b"\r\n"]
        if not self.keep_alive and not close_sent:
            out.append(b"connection: close\r\n")
        if (
            self.remaining is None
            and not self.chunked
            and self.scope["method"] != "HEAD"
            and status not in _NO_BODY_STATUS
        ):
            self.chunked = True
            out.append(b"transfer-encoding: chunked\r\n")
        out.append(b"\r\n")
        # Held back so that the body sent in the same turn goes in the same
        # write; a response whose body comes later gets its head at turn end.
        self.head = b"".join(out)
        protocol.held_heads.hold(self)

    def flush_head(self) -> None:
        head, self.head = self.head, None
        transport = self.protocol.transport
        if head is not None and not self.disconnected and not transport.is_closing():
            transport.write(head)


def _checked_name(name: bytes) -> bytes:
    if not name or _BAD_NAME.search(name):
        raise RuntimeError("Invalid HTTP header name.")
    lowered = bytes(name.lower())
    if type(name) is bytes and len(_CHECKED_NAMES) < _CHECKED_MAX:
        _CHECKED_NAMES[name] = lowered
    return lowered


def _check_value(value: bytes) -> None:
    if _BAD_VALUE.search(value):
        raise RuntimeError("Invalid HTTP header value.")
    if type(value) is bytes and len(_CHECKED_VALUES) < _CHECKED_MAX:
        _CHECKED_VALUES.add(value)


class _HeldHeads:
    """Response heads held back until the end of the loop turn, for every
    connection of one loop: one callback per turn instead of one per response.
    A head whose body was sent meanwhile has already left with it."""

    __slots__ = ("_loop", "_held", "_scheduled", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._held: list[_Exchange] = []
        self._scheduled = False

    def hold(self, exchange: _Exchange) -> None:
        self._held.append(exchange)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        held, self._held = self._held, []
        self._scheduled = False
        for exchange in held:
            if exchange.head is not None:
                exchange.flush_head()


_HELD_HEADS: Final[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _HeldHeads]] = (
    weakref.WeakKeyDictionary()
)


def _held_heads(loop: asyncio.AbstractEventLoop) -> _HeldHeads:
    held = _HELD_HEADS.get(loop)
    if held is None:
        held = _HELD_HEADS[loop] = _HeldHeads(loop)
    return held
