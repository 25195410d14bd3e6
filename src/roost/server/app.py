"""``roost.App``: object classes bound to namespaces, plus the front code, as one ASGI app.

Requests reach objects only through the front code and stubs (see docs/serving.md).
The front is one of:

* ``fetch``: ``async def fetch(request, env) -> Response`` (Cloudflare's
  Worker style); ``request`` is a :class:`roost.Request`;
* ``routes``: a list of Starlette routes (``Route``, ``WebSocketRoute``, ``Mount``);
* ``asgi``: any ASGI app, e.g. a whole Starlette or FastAPI app.

Starlette-style front code finds ``env`` at ``request.state.env`` (also
``websocket.state.env``).  A WebSocket upgrade goes through the front like any
request: the front passes it to an object with ``await stub.fetch(request)``
(or ``stub.fetch(websocket)``), the object accepts it and answers 101, and from
then on the App feeds the connection's frames to the object.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import starlette.applications
import starlette.responses
from starlette.requests import ClientDisconnect
from starlette.requests import Request as StarletteRequest
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import CallTimeout, InvalidObjectId, RoostError, RuntimeClosed
from ..http import WEBSOCKET_EXTENSION, Request
from ..object import DurableObject
from ..runtime import Env, Runtime, WebSocket
from .connection import Connection
from .routetable import RouteTable
from .stats import stats_response

__all__ = ["App", "FetchHandler"]

log = logging.getLogger("roost.server")

#: The plain front: ``async def fetch(request, env) -> Response``.
FetchHandler = Callable[[Request, Env], Awaitable[starlette.responses.Response]]

#: Largest WebSocket message accepted by default (Cloudflare's limit is 1 MiB).
DEFAULT_MAX_MESSAGE_SIZE: Final = 1024 * 1024


class App:
    """A Roost application; itself an ASGI app to run on uvicorn (or any ASGI server).

    Parameters
    ----------
    objects:
        Binding name to :class:`~roost.DurableObject` subclass; each becomes a
        namespace in ``env`` (``env.COUNTER``).
    fetch:
        The front as a function ``async def fetch(request, env) -> Response``.
    routes:
        The front as Starlette routes; handlers read ``request.state.env``.
    asgi:
        The front as any ASGI app (Starlette, FastAPI); its lifespan runs too.
    data_dir:
        Where durable storage lives; ``None`` keeps everything in memory.  The
        ``roost`` command sets it (``--data``) unless the app did.
    env:
        Configuration values added to ``env`` beside the namespaces.
    max_message_size:
        Largest WebSocket message accepted (bytes); a larger one closes the
        socket with 1009.  Applied by ``roost serve``/``roost dev``.
    stats_path:
        When set (e.g. ``"/_roost/stats"``), ``GET`` on this path answers the
        runtime's statistics as JSON (``roost.server.stats``); off by default.
    runtime_options:
        Passed to :class:`~roost.Runtime` (``idle_timeout``, ``durability``,
        ``max_queue``, ``clock``, ...).

    Exactly one of ``fetch``, ``routes`` and ``asgi`` is given.
    """

    def __init__(
        self,
        objects: Mapping[str, type[DurableObject]],
        fetch: FetchHandler | None = None,
        *,
        routes: Sequence[BaseRoute] | None = None,
        asgi: ASGIApp | None = None,
        data_dir: str | Path | None = None,
        env: Mapping[str, Any] | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        stats_path: str | None = None,
        **runtime_options: Any,
    ) -> None:
        fronts = sum(x is not None for x in (fetch, routes, asgi))
        if fronts != 1:
            raise TypeError("App() takes exactly one front: fetch=, routes= or asgi=")
        if fetch is not None and not callable(fetch):
            raise TypeError(f"fetch must be an async function, not {type(fetch).__name__}")
        self._objects = dict(objects)
        self._fetch = fetch
        self._front: ASGIApp | None = asgi
        self._front_has_lifespan = asgi is not None
        self._routes: RouteTable | None = None
        if routes is not None:
            front = starlette.applications.Starlette(
                routes=list(routes), exception_handlers={RoostError: _roost_error_handler}
            )
            self._front = front
            table = RouteTable(front, front.routes, (RoostError, _roost_error_handler))
            self._routes = table if table else None
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._config = dict(env or {})
        self._runtime_options = runtime_options
        self.max_message_size = max_message_size
        #: Path of the opt-in statistics route (None: off).
        self.stats_path = stats_path
        self._runtime: Runtime | None = None
        self._front_state: dict[str, Any] = {}
        self._front_lifespan: asyncio.Task[None] | None = None
        self._front_shutdown: asyncio.Queue[Message] | None = None
        self._connections: set[Connection] = set()
        self._started = False
        self._closing = False  # refusing new WebSockets
        self._closed = False
        # Fail at import time, not at the first request, for a bad binding.
        self._check_options(runtime_options)

    # -- configuration -------------------------------------------------------------------

    @property
    def data_dir(self) -> Path | None:
        """Where durable storage lives (None: in memory)."""
        return self._data_dir

    @data_dir.setter
    def data_dir(self, value: str | Path | None) -> None:
        if self._runtime is not None:
            raise RuntimeError("data_dir cannot change once the app's runtime exists")
        self._data_dir = Path(value) if value is not None else None

    @property
    def durability(self) -> str:
        """``"full"`` (fsync before outputs leave) or ``"process"``; see :class:`~roost.Runtime`.
        The ``roost serve --durability`` option sets it."""
        return str(self._runtime_options.get("durability", "full"))

    @durability.setter
    def durability(self, value: str) -> None:
        if self._runtime is not None:
            raise RuntimeError("durability cannot change once the app's runtime exists")
        options = {**self._runtime_options, "durability": value}
        self._check_options(options)
        self._runtime_options = options

    def _check_options(self, options: Mapping[str, Any]) -> None:
        # Validate runtime options without touching storage: a throwaway runtime
        # in memory checks names, types and ranges.
        usable = {k: v for k, v in options.items() if k not in ("engine", "data_dir")}
        Runtime(self._objects, env=self._config, **usable)

    @property
    def runtime(self) -> Runtime:
        """The runtime that runs this app's objects (made on first use)."""
        if self._runtime is None:
            self._runtime = Runtime(
                self._objects, data_dir=self._data_dir, env=self._config, **self._runtime_options
            )
        return self._runtime

    @property
    def env(self) -> Env:
        """The bindings: namespaces and configuration values."""
        return self.runtime.env

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the runtime (and the front's lifespan); idempotent."""
        if self._started:
            return
        self._started = True
        await self.runtime.start()
        if self._front is not None and self._front_has_lifespan:
            await self._start_front_lifespan(self._front)

    async def close(self) -> None:
        """Graceful stop: close WebSockets with 1001 once the message each is
        handling is done, let running events finish, commit every write."""
        if self._closed:
            return
        self._closed = True
        await self.close_websockets()
        await self._stop_front_lifespan()
        if self._runtime is not None:
            await self._runtime.close()

    async def close_websockets(
        self, code: int = 1001, reason: str = "server shutting down", *, grace: float = 10.0
    ) -> None:
        """Close every WebSocket of this app (after its in-flight message) and wait
        at most ``grace`` seconds for them to finish closing."""
        self._closing = True
        connections = list(self._connections)
        for conn in connections:
            conn.shut_down(code, reason)
        if connections:
            done = [asyncio.ensure_future(c.finished.wait()) for c in connections]
            _, pending = await asyncio.wait(done, timeout=grace)
            for task in pending:
                task.cancel()

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if not self._started:
            await self.start()  # without lifespan: start on the first request
        scope = self._scope_with_env(scope)
        if kind == "http":
            if self.stats_path is not None and scope["path"] == self.stats_path:
                response = stats_response(self.runtime, websockets=len(self._connections))
                await response(scope, receive, send)
            # A routes= front's table inline (one coroutine fewer per request).
            elif self._routes is None or not await self._routes(scope, receive, send):
                await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)

    def _scope_with_env(self, scope: Scope) -> Scope:
        # The server gives each request its own scope and its own copy of the
        # lifespan state, so filling it in place is safe (and saves two copies).
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        if self._front_state:
            state.update(self._front_state)
        state["env"] = self.env
        return scope

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._fetch is None:
            assert self._front is not None
            await self._front(scope, receive, send)
            return
        response = await self._call_fetch(Request(scope, receive))
        await response(scope, receive, send)

    async def _call_fetch(self, request: Request) -> starlette.responses.Response:
        assert self._fetch is not None
        try:
            response = await self._fetch(request, self.env)
        except RoostError as exc:
            return await _roost_error_handler(request, exc)
        except ClientDisconnect:
            # The client left (or the server cut off its body, 413) while the
            # request was read: nobody is there to answer.
            log.debug("client gone during %s %s", request.method, request.url.path)
            return starlette.responses.Response(status_code=499)
        except Exception:
            log.exception("fetch() failed for %s %s", request.method, request.url.path)
            return starlette.responses.PlainTextResponse("Internal Server Error", 500)
        if not isinstance(response, starlette.responses.Response):
            log.error("fetch() returned %r, not a Response", type(response).__name__)
            return starlette.responses.PlainTextResponse("Internal Server Error", 500)
        return response

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        conn = Connection(scope, receive, send)
        ws = WebSocket(conn)
        extensions = {**(scope.get("extensions") or {}), WEBSOCKET_EXTENSION: ws}
        scope = {**scope, "extensions": extensions}
        conn.scope = scope
        if self._closing:
            await conn.refuse(None)
            return
        self._connections.add(conn)
        try:
            response: starlette.responses.Response | None = None
            if self._fetch is not None:
                request = Request({**scope, "type": "http", "method": "GET"}, _no_body)
                response = await self._call_fetch(request)
            else:
                assert self._front is not None
                await self._front(scope, receive, conn.front_send)
            if ws.accepted:
                await conn.run(ws)
            else:
                await conn.refuse(response)
        finally:
            self._connections.discard(conn)
            conn.finished.set()

    # -- lifespan ----------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.close()
                except Exception as exc:
                    log.exception("shutdown failed")
                    await send({"type": "lifespan.shutdown.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _start_front_lifespan(self, front: ASGIApp) -> None:
        # Run the front's own lifespan (e.g. a FastAPI app's) beside ours.
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[Message] = asyncio.Queue()
        started: asyncio.Future[None] = loop.create_future()
        inbox.put_nowait({"type": "lifespan.startup"})

        async def front_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete" and not started.done():
                started.set_result(None)
            elif message["type"] == "lifespan.startup.failed" and not started.done():
                started.set_exception(RuntimeError(message.get("message") or "startup failed"))

        async def run() -> None:
            scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self._front_state}
            try:
                await front(scope, inbox.get, front_send)
            except Exception:
                if not started.done():  # the front does not speak lifespan: fine
                    started.set_result(None)
                else:
                    log.exception("the front app's lifespan failed")
            else:
                if not started.done():  # returned without a word: no lifespan either
                    started.set_result(None)

        self._front_shutdown = inbox
        self._front_lifespan = loop.create_task(run())
        await started

    async def _stop_front_lifespan(self) -> None:
        task, inbox = self._front_lifespan, self._front_shutdown
        if task is None or inbox is None or task.done():
            return
        inbox.put_nowait({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(task, timeout=10.0)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _roost_error_handler(
    request: StarletteRequest, exc: Exception
) -> starlette.responses.Response:
    """Map Roost's errors at the HTTP boundary: overload, shutdown and any
    retryable error (a commit that failed, e.g. on a full disk; an object
    reset) are 503 with ``Retry-After``, a call past its timeout is 504, a
    malformed object ID from the request is the client's error (400)."""
    if (
        getattr(exc, "overloaded", False)
        or getattr(exc, "retryable", False)
        or isinstance(exc, RuntimeClosed)
    ):
        return starlette.responses.PlainTextResponse(
            "Service Unavailable: " + str(exc), 503, headers={"retry-after": "1"}
        )
    if isinstance(exc, CallTimeout):
        # Not retried for the client: the call may have run (its outcome is unknown).
        return starlette.responses.PlainTextResponse("Gateway Timeout: " + str(exc), 504)
    if isinstance(exc, InvalidObjectId) and not getattr(exc, "remote", False):
        return starlette.responses.PlainTextResponse("Bad Request: " + str(exc), 400)
    log.error("unhandled error for %s %s", request.method, request.url.path, exc_info=exc)
    return starlette.responses.PlainTextResponse("Internal Server Error", 500)
