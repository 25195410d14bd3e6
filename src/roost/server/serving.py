"""Serving an :class:`~roost.App` on uvicorn, with a graceful shutdown.

On SIGTERM or SIGINT the server, in order: stops accepting connections; lets
each WebSocket finish the message it is handling, then closes it with 1001
("going away"); lets in-flight HTTP requests finish; and (ASGI lifespan
shutdown) lets running events finish and commits every pending write before
storage closes.  uvicorn alone would close WebSockets with 1012 first.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator, Generator
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from ._http1 import HttpProtocol
from .app import App
from .limits import DEFAULT_LIMITS, ServerConfig, ServerLimits, default_max_connections
from .protocol import WebSocketProtocol

__all__ = ["Server", "bind", "make_config", "running"]


class Server(uvicorn.Server):
    """``uvicorn.Server`` that closes an App's WebSockets with 1001 on shutdown.

    ``install_signal_handlers=False`` leaves signals alone (for a server run
    inside another program, e.g. a test).
    """

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        install_signal_handlers: bool = True,
        admin: tuple[ASGIApp, socket.socket] | None = None,
    ) -> None:
        super().__init__(config)
        self._install_signal_handlers = install_signal_handlers
        # The admin app and its own listening socket (``roost serve --admin``):
        # a second uvicorn server in this loop, never the app's port.
        self._admin = admin
        self._admin_server: Server | None = None
        self._admin_task: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self._admin is not None and self.started:
            # After the app's lifespan: the admin app observes a started runtime.
            await self._start_admin(*self._admin)

    @property
    def ready(self) -> bool:
        """Started, and so is the admin server if there is one (``started`` is
        set before the admin server starts)."""
        admin = self._admin_server
        return self.started and (self._admin is None or (admin is not None and admin.started))

    async def _start_admin(self, app: ASGIApp, sock: socket.socket) -> None:
        hook = getattr(app, "on_serve", None)
        if callable(hook):
            hook(self)
        config = uvicorn.Config(
            app,
            lifespan="on",
            log_config=None,
            log_level=self.config.log_level,
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        admin = Server(config, install_signal_handlers=False)
        self._admin_server = admin
        self._admin_task = asyncio.ensure_future(admin.serve(sockets=[sock]))
        while not admin.started:
            if self._admin_task.done():
                self._admin_task.result()  # raise why it failed
                raise RuntimeError("the admin server stopped during startup")
            await asyncio.sleep(0.005)

    async def _stop_admin(self) -> None:
        if self._admin_server is not None and self._admin_task is not None:
            self._admin_server.should_exit = True
            await self._admin_task
            self._admin_server = self._admin_task = None

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:  # stop accepting before anything else
            server.close()
        await self._stop_admin()
        app = find_app(self.config.loaded_app)
        if app is not None:
            await app.close_websockets(grace=self.config.timeout_graceful_shutdown or 10.0)
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn re-raises the signal after shutdown, so the process dies of
        # it; `roost serve` exits 0 after a graceful stop instead.
        if not self._install_signal_handlers:
            yield
            return
        loop = asyncio.get_running_loop()
        handled = (signal.SIGINT, signal.SIGTERM)
        for sig in handled:
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)


def find_app(app: Any) -> App | None:
    """The :class:`App` inside uvicorn's middleware wrappers, if any."""
    for _ in range(10):
        if isinstance(app, App):
            return app
        app = getattr(app, "app", None)
    return None


def make_config(
    app: Any,
    *,
    max_url_bytes: int = DEFAULT_LIMITS.max_url_bytes,
    max_header_bytes: int = DEFAULT_LIMITS.max_header_bytes,
    max_headers: int = DEFAULT_LIMITS.max_headers,
    header_timeout: float = DEFAULT_LIMITS.header_timeout,
    max_body_bytes: int = DEFAULT_LIMITS.max_body_bytes,
    max_fragmented_bytes: int = DEFAULT_LIMITS.max_fragmented_bytes,
    max_send_buffer_bytes: int = DEFAULT_LIMITS.max_send_buffer_bytes,
    **options: Any,
) -> ServerConfig:
    """A uvicorn config for a Roost app: lifespan on, message size from the App,
    Roost's HTTP/1.1 protocol (:mod:`._http1`), the WebSocket protocol that
    loses no message before a bad frame, and the limits of
    :class:`~.limits.ServerLimits` (``docs/limits.md``).

    ``limit_concurrency`` (uvicorn's cap on connections, answered 503 beyond
    it) defaults to :func:`~.limits.default_max_connections`; pass ``None``
    for no cap.  Other ``options`` go to ``uvicorn.Config``.
    """
    limits = ServerLimits(
        max_url_bytes=max_url_bytes,
        max_header_bytes=max_header_bytes,
        max_headers=max_headers,
        header_timeout=header_timeout,
        max_body_bytes=max_body_bytes,
        max_fragmented_bytes=max_fragmented_bytes,
        max_send_buffer_bytes=max_send_buffer_bytes,
    )
    found = find_app(app)
    options.setdefault("lifespan", "on")
    options.setdefault("http", HttpProtocol)
    options.setdefault("ws", WebSocketProtocol)
    options.setdefault("timeout_graceful_shutdown", 30)
    if "limit_concurrency" not in options:
        options["limit_concurrency"] = default_max_connections()
    if found is not None:
        options.setdefault("ws_max_size", found.max_message_size)
    return ServerConfig(app, limits=limits, **options)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port=0``: a free one).

    Raises ``OSError`` (e.g. ``EADDRINUSE``) with the address in the message.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


@contextlib.asynccontextmanager
async def running(
    app: App,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    admin: tuple[ASGIApp, socket.socket] | None = None,
    **options: Any,
) -> AsyncIterator[str]:
    """Serve ``app`` on uvicorn in this event loop; yield its base URL.

    For tests and embedding: ``async with running(app) as url: ...``.  On exit
    the server shuts down gracefully, as on SIGTERM.  ``admin``: an admin app
    (``roost.admin.web.AdminApp``) and the socket to serve it on (:func:`bind`).
    """
    sock = bind(host, port)
    bound_port = sock.getsockname()[1]
    options.setdefault("log_level", "warning")
    server = Server(make_config(app, **options), install_signal_handlers=False, admin=admin)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        while not server.ready:
            if task.done():
                task.result()  # startup failed: raise why
                raise RuntimeError("the server stopped during startup")
            await asyncio.sleep(0.005)
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        await task
