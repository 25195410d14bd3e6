"""Server startup for the hostile-input tests: a small Roost app on 127.0.0.1.

``async with hostile_server(**options) as url`` serves the app of ``hostile_app`` with
the given ``make_config`` options (tiny limits, so each test is fast).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from roost import App, DurableObject, Env, Request, Response, WebSocket
from roost.server import running

ServeWith = Callable[..., AbstractAsyncContextManager[str]]


class Sink(DurableObject):
    """Reads a forwarded request's body (and stores it, for a path ending in
    ``/keep``) and answers its path and size; on a WebSocket, echoes each
    message (hibernation style) and broadcasts ``all:...`` to every socket of
    the object; records the close codes it hears."""

    closes: list[tuple[int, str]] = []

    async def fetch(self, request: Request) -> Response:
        if request.websocket is not None:
            self.ctx.accept_websocket(request.websocket)
            return Response(status_code=101)
        body = await request.body()
        if request.url.path.endswith("/keep"):
            await self.ctx.storage.put("body", body)
        return Response(f"{request.url.path} {len(body)}", media_type="text/plain")

    async def websocket_message(self, ws: WebSocket, message: str | bytes) -> None:
        if isinstance(message, str) and message.startswith("all:"):
            for other in self.ctx.get_websockets():
                other.send(message)
            return
        ws.send(message)

    async def websocket_close(self, ws: WebSocket, code: int, reason: str, clean: bool) -> None:
        Sink.closes.append((code, reason))


async def front(request: Request, env: Env) -> Response:
    """``/{name}/...`` goes to the Sink named ``name``; ``/`` answers ``ok``."""
    name = request.url.path.strip("/").split("/")[0]
    if not name:
        return Response("ok", media_type="text/plain")
    return await env.SINK.get_by_name(name).fetch(request)


def make_app(**options: Any) -> App:
    Sink.closes.clear()
    return App({"SINK": Sink}, fetch=front, **options)


@pytest.fixture
def hostile_app() -> Callable[..., App]:
    """``hostile_app(**app_options)``: the App the hostile server serves."""
    return make_app


@pytest.fixture
def hostile_server() -> ServeWith:
    """``async with hostile_server(**make_config_options) as url``."""

    def start(app: App | None = None, **options: Any) -> AbstractAsyncContextManager[str]:
        return running(app or make_app(), **options)

    return start
