"""The chat's front: Starlette routes answering as the demo's Worker does.

GET  /                          the page
POST /api/room                  a new private room ID (64 hex) as text
GET  /api/room/{name}/websocket WebSocket into the room: {name} is a room ID
                                or a public name of at most 32 characters
anything else                   404 "Not found" (405 for /api/room but POST)
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from roost import App, InvalidObjectId, Namespace, Stub

from . import js
from .ratelimit import RateLimiter
from .room import ChatRoom

PAGE = Path(__file__).with_name("static") / "index.html"
ROOM_ID = re.compile(r"[0-9a-f]{64}")
# The demo routes on the path alone, whatever the method.
ANY: Final = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
INVALID_ID: Final = "Invalid room ID."


class BadRoomId(Exception):
    """A 64-hex name that is not an ID of this namespace (the demo's
    ``idFromString`` throws, and its error handler answers)."""


async def page(request: Request) -> Response:
    return HTMLResponse(PAGE.read_text(encoding="utf-8"))


async def rooms(request: Request) -> Response:
    if request.method != "POST":
        return PlainTextResponse("Method not allowed", status_code=405)
    room_id = request.state.env.ROOMS.new_unique_id().hex
    # Pages served from another origin (the demo's own, say) create rooms here too.
    return PlainTextResponse(room_id, headers={"Access-Control-Allow-Origin": "*"})


def room_stub(request: Request | WebSocket) -> Stub | Response:
    """The room named in the path, or the 404 to give instead; raises BadRoomId."""
    rooms: Namespace = request.state.env.ROOMS
    name: str = request.path_params["name"]
    if ROOM_ID.fullmatch(name):
        try:
            return rooms.get(rooms.id_from_string(name))
        except InvalidObjectId:
            raise BadRoomId(name) from None
    if js.length(name) > 32:
        return PlainTextResponse("Name too long", status_code=404)
    return rooms.get_by_name(name)


async def room_http(request: Request) -> Response:
    # Not an upgrade: the room answers 400 "expected websocket" itself.
    try:
        stub = room_stub(request)
    except BadRoomId:
        return PlainTextResponse(INVALID_ID, status_code=500)
    return stub if isinstance(stub, Response) else await stub.fetch(request)


async def room_elsewhere(request: Request) -> Response:
    # /api/room/NAME/...: the name is checked first, then the room knows no such path.
    try:
        stub = room_stub(request)
    except BadRoomId:
        return PlainTextResponse(INVALID_ID, status_code=500)
    return stub if isinstance(stub, Response) else not_found(request)


async def room_websocket(websocket: WebSocket) -> None:
    try:
        stub = room_stub(websocket)
    except BadRoomId:
        # As the demo does: a socket that carries the error, so the page can show
        # it, rather than a refused upgrade its page would retry forever.
        await websocket.accept()
        await websocket.send_json({"error": INVALID_ID})
        await websocket.close(1011, "Session setup failed.")
        return
    response = stub if isinstance(stub, Response) else await stub.fetch(websocket)
    if response.status_code != 101:
        await websocket.send_denial_response(response)
    # On 101 the room accepted the socket; the App relays its frames from here.


def not_found(request: Request) -> Response:
    return PlainTextResponse("Not found", status_code=404)


async def no_route(request: Request) -> Response:
    return not_found(request)


async def no_websocket_route(websocket: WebSocket) -> None:
    await websocket.send_denial_response(PlainTextResponse("Not found", status_code=404))


def rate_limit_from_environ() -> dict[str, float]:
    """``CHAT_RATE_LIMIT=INTERVAL/BURST`` (seconds, frames), default ``5/5``: the
    demo's one frame per 5 s after a burst of 5 (its 20 s of grace).

    ``0/1`` lets every message through (the limiter is still asked each time):
    the ws-broadcast benchmark sets it, since its senders post far faster than
    a person would.
    """
    interval, _, burst = os.environ.get("CHAT_RATE_LIMIT", "5/5").partition("/")
    return {"interval": float(interval), "burst": int(burst or 1)}


def create_app(*, rate_limit: dict[str, float] | None = None, **options: Any) -> App:
    """The chat app; ``rate_limit={"interval": 5.0, "burst": 5}`` by default
    (or what ``CHAT_RATE_LIMIT`` says).

    ``options`` go to :class:`roost.App` (``data_dir``, ``idle_timeout``, ...).
    """
    return App(
        {"ROOMS": ChatRoom, "LIMITERS": RateLimiter},
        routes=[
            Route("/", page, methods=ANY),
            Route("/api/room", rooms, methods=ANY),
            Route("/api/room/", rooms, methods=ANY),
            Route("/api/room/{name}/websocket", room_http, methods=ANY),
            Route("/api/room/{name}", room_elsewhere, methods=ANY),
            Route("/api/room/{name}/{rest:path}", room_elsewhere, methods=ANY),
            Route("/{rest:path}", no_route, methods=ANY),
            WebSocketRoute("/api/room/{name}/websocket", room_websocket),
            WebSocketRoute("/{rest:path}", no_websocket_route),
        ],
        env={"RATE_LIMIT": rate_limit or rate_limit_from_environ()},
        **options,
    )
