"""The chat's front: Starlette routes speaking the workers-chat-demo protocol.

GET  /                          the page
POST /api/room                  a new private room ID (64 hex) as text
GET  /api/room/{name}/websocket WebSocket into the room: {name} is a room ID
                                or a public name of at most 32 characters
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from roost import App, InvalidObjectId, Stub

from .ratelimit import RateLimiter
from .room import ChatRoom

PAGE = Path(__file__).with_name("static") / "index.html"
ROOM_ID = re.compile(r"[0-9a-f]{64}")


async def page(request: Request) -> Response:
    return HTMLResponse(PAGE.read_text(encoding="utf-8"))


async def new_room(request: Request) -> Response:
    return PlainTextResponse(request.state.env.ROOMS.new_unique_id().hex)


def room_stub(request: Request | WebSocket) -> Stub | Response:
    """The room named in the path, or the error response to give instead."""
    rooms = request.state.env.ROOMS
    name: str = request.path_params["name"]
    if ROOM_ID.fullmatch(name):
        try:
            return rooms.get(rooms.id_from_string(name))
        except InvalidObjectId:
            return PlainTextResponse("Invalid room ID", status_code=404)
    if len(name) > 32:
        return PlainTextResponse("Name too long", status_code=404)
    return rooms.get_by_name(name)


async def room_http(request: Request) -> Response:
    # Not an upgrade: the room answers 400 "expected websocket" itself.
    stub = room_stub(request)
    return stub if isinstance(stub, Response) else await stub.fetch(request)


async def room_websocket(websocket: WebSocket) -> None:
    stub = room_stub(websocket)
    response = stub if isinstance(stub, Response) else await stub.fetch(websocket)
    if response.status_code != 101:
        await websocket.send_denial_response(response)
    # On 101 the room accepted the socket; the App relays its frames from here.


def rate_limit_from_environ() -> dict[str, float]:
    """``CHAT_RATE_LIMIT=INTERVAL/BURST`` (seconds, actions), default ``5/4``.

    ``0/1`` lets every message through (the limiter is still asked each time):
    the ws-broadcast benchmark sets it, since its senders post far faster than
    a person would.
    """
    interval, _, burst = os.environ.get("CHAT_RATE_LIMIT", "5/4").partition("/")
    return {"interval": float(interval), "burst": int(burst or 1)}


def create_app(*, rate_limit: dict[str, float] | None = None, **options: Any) -> App:
    """The chat app; ``rate_limit={"interval": 5.0, "burst": 4}`` by default
    (or what ``CHAT_RATE_LIMIT`` says).

    ``options`` go to :class:`roost.App` (``data_dir``, ``idle_timeout``, ...).
    """
    return App(
        {"ROOMS": ChatRoom, "LIMITERS": RateLimiter},
        routes=[
            Route("/", page),
            Route("/api/room", new_room, methods=["POST"]),
            Route("/api/room/{name}/websocket", room_http),
            WebSocketRoute("/api/room/{name}/websocket", room_websocket),
        ],
        env={"RATE_LIMIT": rate_limit or rate_limit_from_environ()},
        **options,
    )
