"""ChatRoom: one object per room, on the WebSocket hibernation API.

Every member's socket is accepted with ``ctx.accept_websocket``, so a quiet
room costs no instance in memory: the next message re-creates the object, which
finds its members with ``ctx.get_websockets()`` and each member's name and IP
in the socket's attachment.  While awake the room keeps those sessions in a
dict too, so a broadcast does not decode a hundred attachments.  Messages are
stored under their timestamp, so the last 100 survive restarts.
"""

from __future__ import annotations

import json
import time
from typing import Any, Final

from roost import DurableObject, Env, ObjectState, Request, Response, WebSocket, WebSocketClosed

MAX_NAME: Final = 32
MAX_MESSAGE: Final = 256
HISTORY: Final = 100
PREFIX: Final = "msg:"
RATE_LIMITED: Final = "Your IP is being rate-limited, please try again later."


class ChatRoom(DurableObject):
    def __init__(self, ctx: ObjectState, env: Env) -> None:
        super().__init__(ctx, env)
        self.last_timestamp: int | None = None
        # Each member's session ({"name", "ip"}), restored from the attachments:
        # the room may be waking from hibernation with its sockets still open.
        self.sessions: dict[WebSocket, dict[str, Any]] = {
            ws: ws.deserialize_attachment() or {} for ws in ctx.get_websockets()
        }
        # Answered by the runtime without waking a hibernated room.
        ctx.set_websocket_auto_response("ping", "pong")

    async def fetch(self, request: Request) -> Response:
        ws = request.websocket
        if ws is None:
            return Response("expected websocket", status_code=400, media_type="text/plain")
        ip = request.client.host if request.client else "unknown"
        self.ctx.accept_websocket(ws)
        session = {"name": None, "ip": ip}
        ws.serialize_attachment(session)
        self.sessions[ws] = session
        return Response(status_code=101)

    # -- hibernation handlers -------------------------------------------------------------

    async def websocket_message(self, ws: WebSocket, message: str | bytes) -> None:
        session = self.sessions.get(ws)
        if session is None:  # accepted by an earlier instance after this one woke
            session = self.sessions[ws] = ws.deserialize_attachment() or {}
        try:
            data = json.loads(message)
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except ValueError:
            send(ws, {"error": "Invalid message."})
            return
        if not session.get("name"):
            await self.join(ws, session, data)
        else:
            await self.post(ws, session, data)

    async def websocket_close(self, ws: WebSocket, code: int, reason: str, was_clean: bool) -> None:
        self.leave(ws)

    async def websocket_error(self, ws: WebSocket, error: Exception) -> None:
        self.leave(ws)

    # -- the protocol ---------------------------------------------------------------------

    async def join(self, ws: WebSocket, session: dict[str, Any], data: dict[str, Any]) -> None:
        name = str(data.get("name") or "anonymous")
        if len(name) > MAX_NAME:
            send(ws, {"error": "Name too long."})
            ws.close(1009, "Name too long.")
            return
        session["name"] = name
        ws.serialize_attachment(session)
        for other in self.members(exclude=ws):
            send(ws, {"joined": other})
        stored = await self.ctx.storage.list(prefix=PREFIX, reverse=True, limit=HISTORY)
        for text in reversed(list(stored.values())):
            send(ws, text)
        self.broadcast({"joined": name}, exclude=ws)
        send(ws, {"ready": True})

    async def post(self, ws: WebSocket, session: dict[str, Any], data: dict[str, Any]) -> None:
        text = str(data.get("message", ""))
        if len(text) > MAX_MESSAGE:
            send(ws, {"error": "Message too long."})
            return
        limiter = self.env.LIMITERS.get_by_name(session.get("ip") or "unknown")
        if await limiter.take() > 0:
            send(ws, {"error": RATE_LIMITED})
            return
        # From here to the broadcast nothing awaits outside the object, so
        # messages get timestamps, storage order and broadcast order alike.
        timestamp = max(int(time.time() * 1000), await self.latest_timestamp() + 1)
        self.last_timestamp = timestamp
        payload = json.dumps({"name": session["name"], "message": text, "timestamp": timestamp})
        await self.ctx.storage.put(f"{PREFIX}{timestamp:016d}", payload)
        self.broadcast(payload)

    def leave(self, ws: WebSocket) -> None:
        session = self.sessions.pop(ws, None) or ws.deserialize_attachment() or {}
        if session.get("name"):
            self.broadcast({"quit": session["name"]}, exclude=ws)

    # -- helpers --------------------------------------------------------------------------

    def members(self, *, exclude: WebSocket | None = None) -> list[str]:
        return [
            session["name"]
            for other, session in self.sessions.items()
            if other is not exclude and session.get("name")
        ]

    def broadcast(self, message: dict[str, Any] | str, *, exclude: WebSocket | None = None) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        for other, session in self.sessions.items():
            if other is not exclude and session.get("name"):
                send(other, text)

    async def latest_timestamp(self) -> int:
        if self.last_timestamp is None:
            newest = await self.ctx.storage.list(prefix=PREFIX, reverse=True, limit=1)
            self.last_timestamp = int(next(iter(newest))[len(PREFIX) :]) if newest else 0
        return self.last_timestamp


def send(ws: WebSocket, message: dict[str, Any] | str) -> None:
    """Send, ignoring a socket that closed a moment ago (its close event follows)."""
    # try/except, not contextlib.suppress: this runs once per member per message.
    try:  # noqa: SIM105
        ws.send(message if isinstance(message, str) else json.dumps(message))
    except WebSocketClosed:
        pass
