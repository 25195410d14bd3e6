"""HTTP into objects: ``Request`` and ``Response`` are Starlette's.

Why Starlette's classes and not a copy of the Fetch API: the front code users
write is Starlette or FastAPI, so the request a route receives can be handed to
``stub.fetch`` as it is, and the ``Response`` an object returns can be returned
by the route as it is.  To cross a stub by value (and later a network), a
request travels as :class:`RequestMessage` (method, URL, headers, body) and a
response as :class:`ResponseMessage` (status, headers, body); each side rebuilds
the Starlette object.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

import starlette.requests
import starlette.responses
from starlette.types import Message, Receive

if TYPE_CHECKING:
    from .runtime.websocket import WebSocket

#: The ASGI scope extension under which a request carries its WebSocket handle.
WEBSOCKET_EXTENSION = "roost.websocket"

__all__ = ["Request", "RequestMessage", "Response", "ResponseMessage"]

_Headers = list[tuple[bytes, bytes]]


class Request(starlette.requests.Request):
    """A Starlette ``Request``, with a constructor for requests made in code.

    ``Request.build("https://host/path?q=1", method="POST", body=b"...")``
    """

    @classmethod
    def build(
        cls,
        url: str,
        *,
        method: str = "GET",
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        body: bytes | str = b"",
    ) -> Request:
        """Make a request from a URL (a bare path gets ``http://object``)."""
        return RequestMessage.build(url, method=method, headers=headers, body=body).to_request()

    @property
    def websocket(self) -> WebSocket | None:
        """The WebSocket of an upgrade request (``Upgrade: websocket``), else None.

        An object accepts it with ``ws.accept()`` or ``self.ctx.accept_websocket(ws)``
        and answers ``Response(status_code=101)``.
        """
        ws: WebSocket | None = self.scope.get("extensions", {}).get(WEBSOCKET_EXTENSION)
        return ws


class Response(starlette.responses.Response):
    """A Starlette ``Response`` as returned by ``stub.fetch``, with readers for its body."""

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return bytes(self.body).decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(bytes(self.body))

    @property
    def status(self) -> int:
        """The status code (the Fetch API's name for ``status_code``)."""
        return self.status_code

    @property
    def ok(self) -> bool:
        """True for a 2xx status."""
        return 200 <= self.status_code < 300


def encode_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None,
) -> _Headers:
    if headers is None:
        return []
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in pairs]


def _absolute(url: str) -> str:
    return "http://object" + (url if url.startswith("/") else "/" + url)


def _may_have_body(headers: _Headers) -> bool:
    for key, value in headers:
        if key == b"content-length":
            return value != b"0"
        if key == b"transfer-encoding":
            return True
    return False


def _url_of(connection: starlette.requests.HTTPConnection) -> str:
    """The connection's URL as a string, without Starlette's slower URL object."""
    cached = getattr(connection, "_url", None)
    if cached is not None:
        return str(cached)
    scope = connection.scope
    scheme = scope.get("scheme", "http")
    host = None
    for key, value in scope["headers"]:
        if key == b"host":
            host = value.decode("latin-1")
            break
    if host is None:
        server = scope.get("server")
        host = f"{server[0]}:{server[1]}" if server else "object"
    # The URL carries the path as the client sent it (percent-encoded): the
    # decoded scope["path"] would turn "%3F" into a query and "%2F" into a slash.
    raw = scope.get("raw_path")
    path = quote(scope.get("root_path", "")) + (
        raw.decode("latin-1") if raw else quote(scope["path"])
    )
    query = scope.get("query_string", b"")
    return (
        f"{scheme}://{host}{path}?{query.decode('latin-1')}"
        if query
        else (f"{scheme}://{host}{path}")
    )


@dataclass(slots=True)
class RequestMessage:
    """A request by value: what crosses a stub for ``fetch``."""

    method: str
    url: str
    headers: _Headers = field(default_factory=list)
    body: bytes = b""
    client: tuple[str, int] | None = None
    #: The connection of an upgrade request.  It is the one part of a request
    #: that is not data: in one process it is the handle itself; a remote
    #: router sends an ID instead and relays frames both ways.
    websocket: WebSocket | None = None

    @classmethod
    def build(
        cls,
        url: str,
        *,
        method: str = "GET",
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        body: bytes | str = b"",
    ) -> RequestMessage:
        """A request made in code (it gets a content-length when it has a body)."""
        raw = body.encode() if isinstance(body, str) else bytes(body)
        encoded = encode_headers(headers)
        if raw and not any(k in (b"content-length", b"transfer-encoding") for k, _ in encoded):
            encoded.append((b"content-length", str(len(raw)).encode()))
        return cls(method, url, encoded, raw)

    @classmethod
    async def from_request(cls, request: starlette.requests.HTTPConnection) -> RequestMessage:
        """Copy a Starlette ``Request``, or a ``WebSocket`` still in its handshake."""
        scope = request.scope
        client = scope.get("client")
        ws: WebSocket | None = scope.get("extensions", {}).get(WEBSOCKET_EXTENSION)
        headers = list(scope["headers"])
        if isinstance(request, starlette.requests.Request) and scope["type"] == "http":
            method = scope["method"]
            body = await request.body() if _may_have_body(headers) else b""
        else:
            method, body = "GET", b""  # an upgrade request has no body
        client = (client[0], client[1]) if client else None
        return cls(method, _url_of(request), headers, body, client, ws)

    def to_scope(self) -> dict[str, Any]:
        url = self.url if "://" in self.url else _absolute(self.url)
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
        headers = list(self.headers)
        if not any(k == b"host" for k, _ in headers):
            headers.insert(0, (b"host", parts.netloc.encode("latin-1")))
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": self.method.upper(),
            "scheme": parts.scheme,
            "path": unquote(parts.path) or "/",
            "raw_path": (parts.path or "/").encode("latin-1"),
            "query_string": parts.query.encode("latin-1"),
            "root_path": "",
            "headers": headers,
            "server": (parts.hostname or "object", port),
            "client": self.client,
            "extensions": {} if self.websocket is None else {WEBSOCKET_EXTENSION: self.websocket},
        }

    def to_request(self) -> Request:
        return Request(self.to_scope(), self._receive())

    def _receive(self) -> Receive:
        body = self.body
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return receive


@dataclass(slots=True)
class ResponseMessage:
    """A response by value: what crosses a stub back from ``fetch``."""

    status: int
    headers: _Headers
    body: bytes

    @classmethod
    async def from_response(cls, response: starlette.responses.Response) -> ResponseMessage:
        if not isinstance(response, starlette.responses.Response):
            raise TypeError(
                f"fetch() must return a starlette/roost Response, not {type(response).__name__}"
            )
        headers = list(response.raw_headers)
        if isinstance(response, starlette.responses.StreamingResponse):
            chunks: list[bytes] = []
            async for chunk in response.body_iterator:
                chunks.append(
                    chunk.encode(response.charset) if isinstance(chunk, str) else bytes(chunk)
                )
            body = b"".join(chunks)
            headers = [(k, v) for k, v in headers if k != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
        else:
            body = bytes(response.body)
        return cls(response.status_code, headers, body)

    def to_response(self) -> Response:
        response = Response.__new__(Response)
        response.status_code = self.status
        response.body = self.body
        response.raw_headers = list(self.headers)
        response.background = None
        return response
