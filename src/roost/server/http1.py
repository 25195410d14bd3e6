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

__all__ = ["HttpProtocol"]

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
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.expect_continue = False
        self.upgrade: bytes | None = None
        self.forwarded = False  # the request carries X-Forwarded-For or -Proto
        self.reading_paused = False
        self.writing_paused = False
        self.drained: asyncio.Future[None] | None = None
        self.idle_since: float | None = None  # None while a request is under way
        self.idle_timer: asyncio.TimerHandle | None = None

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

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        for exchange in (self.current, *self.queued):
            if exchange is not None:
                exchange.lost()
        self.queued.clear()
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        if exc is None:
            self.transport.close()

    def eof_received(self) -> None:
        return None  # the transport closes itself

    def data_received(self, data: bytes) -> None:
        self.idle_since = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = upgrade.args[0] if upgrade.args else len(data)
            self._upgraded(data[offset:])
        except httptools.HttpParserError as exc:
            log.warning("Invalid HTTP request received: %s", exc)
            self._refuse(400, "Invalid HTTP request received.")

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
        self.expect_continue = False
        self.upgrade = None
        self.forwarded = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_continue = True
        elif name == b"upgrade":
            self.upgrade = value.lower()
        elif name == b"x-forwarded-for" or name == b"x-forwarded-proto":
            self.forwarded = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        method = parser.get_method().decode("ascii")
        if (
            self.upgrade == b"websocket"
            and self.ws_protocol_class is not None
            and parser.should_upgrade()
        ):
            return  # data_received hands the connection over
        version = parser.get_http_version()
        url = httptools.parse_url(self.url)
        raw_path = url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
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
        if self.config.reset_contextvars:
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
        self.idle_since = self.loop.time()
        if self.idle_timer is None:
            self.idle_timer = self.loop.call_later(self.keep_alive_timeout, self._idle_check)

    def _idle_check(self) -> None:
        # One timer per connection: when it fires, close if the connection has
        # been idle for the whole timeout, else wait out the rest of it.
        self.idle_timer = None
        if self.idle_since is None or self.transport.is_closing():
            return  # busy: re-armed when the current response completes
        left = self.idle_since + self.keep_alive_timeout - self.loop.time()
        if left <= 0:
            self.transport.close()
        else:
            self.idle_timer = self.loop.call_later(left, self._idle_check)

    def _refuse(self, status: int, message: str) -> None:
        body = message.encode()
        head = [_STATUS_LINES[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(
            b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % len(body)
        )
        self.transport.write(b"".join(head) + body)
        self.transport.close()

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
