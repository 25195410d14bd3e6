"""ChatRoom: one object per room, on the WebSocket hibernation API.

The protocol is the demo's, frame for frame (``README.md`` lists the few
differences).  A member is silent until its first frame names it.  Whatever the
room broadcasts meanwhile (the *unnamed window*) is kept for it, and on naming
it gets, in this order: a ``joined`` for each member there when it connected,
the history of that moment, the window's broadcasts, the room's ``joined`` for
itself (which every named member gets too), then ``ready``.

Every socket is accepted with ``ctx.accept_websocket``, so a quiet room costs no
instance in memory: the next frame re-creates the object, which finds its
members with ``ctx.get_websockets()`` and each one's name, IP and connect point
in the socket's attachment.  While awake the room keeps those sessions in a dict
too, so a broadcast decodes no attachment.  Messages are stored under their
timestamp, so the history survives restarts.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Final

from roost import DurableObject, Env, ObjectState, Request, Response, WebSocket, WebSocketClosed

from . import js

MAX_NAME: Final = 32
MAX_MESSAGE: Final = 256
HISTORY: Final = 100
PREFIX: Final = "msg:"
RATE_LIMITED: Final = "Your IP is being rate-limited, please try again later."
READY: Final = json.dumps({"ready": True})

log = logging.getLogger(__name__)


def key(timestamp: int) -> str:
    return f"{PREFIX}{timestamp:016d}"


class Window:
    """What an unnamed session must be told, captured at the first change the
    room saw after it connected (before that, the room as it is now will do)."""

    __slots__ = ("frames", "roster", "upto")

    def __init__(self, roster: list[str], upto: int) -> None:
        self.roster = roster  # the named members just before that change
        self.upto = upto  # the newest message's timestamp then
        self.frames: list[str] = []  # every broadcast since, in order


class Session:
    __slots__ = ("ip", "name", "since", "window")

    def __init__(self, name: str | None, ip: str, since: int | None) -> None:
        self.name = name
        self.ip = ip
        # The newest message's timestamp when the socket connected: the history
        # it is owed ends there.  None for sockets of an older version of this file.
        self.since = since
        self.window: Window | None = None

    @classmethod
    def restore(cls, attachment: Any) -> Session:
        saved: dict[str, Any] = attachment if isinstance(attachment, dict) else {}
        return cls(saved.get("name"), saved.get("ip") or "unknown", saved.get("since"))

    def attachment(self) -> dict[str, Any]:
        return {"name": self.name, "ip": self.ip, "since": self.since}


class ChatRoom(DurableObject):
    def __init__(self, ctx: ObjectState, env: Env) -> None:
        super().__init__(ctx, env)
        self.last_timestamp: int | None = None
        # The room may be waking from hibernation with its sockets still open.
        # Kept in accept order, which is the order the demo lists members in.
        self.sessions: dict[WebSocket, Session] = {
            ws: Session.restore(ws.deserialize_attachment()) for ws in ctx.get_websockets()
        }
        # Unnamed sessions that have seen no change yet (see Window).  A socket
        # unnamed across a hibernation lost its window's notices with the old
        # instance; it starts over here, its history still counted from `since`.
        self.unchanged: dict[WebSocket, Session] = {
            ws: s for ws, s in self.sessions.items() if s.name is None
        }
        # Answered by the runtime without waking a hibernated room.
        ctx.set_websocket_auto_response("ping", "pong")

    async def fetch(self, request: Request) -> Response:
        ws = request.websocket
        if ws is None:
            return Response("expected websocket", status_code=400, media_type="text/plain")
        ip = request.client.host if request.client else "unknown"
        session = Session(None, ip, await self.latest_timestamp())
        self.ctx.accept_websocket(ws)
        ws.serialize_attachment(session.attachment())
        self.sessions[ws] = session
        self.unchanged[ws] = session
        return Response(status_code=101)

    # -- hibernation handlers -------------------------------------------------------------

    async def websocket_message(self, ws: WebSocket, message: str | bytes) -> None:
        session = self.sessions.get(ws)
        if session is None:  # accepted by an earlier instance after this one woke
            session = self.sessions[ws] = Session.restore(ws.deserialize_attachment())
            if session.name is None:
                self.unchanged[ws] = session
        try:
            await self.receive(ws, session, message)
        except js.Invalid as error:
            send(ws, {"error": str(error)})
        except Exception as error:
            # The demo sends the stack; the client gets the kind, the log the rest.
            log.exception("chat room failed on a message")
            send(ws, {"error": f"Internal error ({type(error).__name__})."})

    async def websocket_close(self, ws: WebSocket, code: int, reason: str, was_clean: bool) -> None:
        await self.leave(ws)

    async def websocket_error(self, ws: WebSocket, error: Exception) -> None:
        await self.leave(ws)

    # -- the protocol ---------------------------------------------------------------------

    async def receive(self, ws: WebSocket, session: Session, message: str | bytes) -> None:
        # Every frame counts against the limit, the name and unreadable ones too,
        # and it is checked before the frame is read, as in the demo.
        limiter = self.env.LIMITERS.get_by_name(session.ip)
        try:
            wait = await limiter.take()
        except Exception:
            log.exception("the rate limiter failed")
            # Without a limiter the session cannot go on; the client reconnects.
            await self.leave(ws)
            ws.close(1011, "Rate limiter failed.")
            return
        if wait > 0:
            send(ws, {"error": RATE_LIMITED})
            return
        # Past the limiter nothing awaits outside the object (storage calls finish
        # at once), so each frame's effects and broadcasts happen as one step.
        data = js.parse(message)
        if session.name is None:
            await self.join(ws, session, data)
        else:
            await self.post(ws, session, data)

    async def join(self, ws: WebSocket, session: Session, data: Any) -> None:
        value = js.field(data, "name")
        name = js.to_string(value) if js.truthy(value) else "anonymous"
        if js.length(name) > MAX_NAME:
            send(ws, {"error": "Name too long."})
            ws.close(1009, "Name too long.")
            self.forget(ws)  # a socket the object closes gets no close event
            return
        for frame in await self.owed(ws, session):
            send(ws, frame)
        await self.freeze()  # the roster is about to change
        session.name, session.window = name, None
        ws.serialize_attachment(session.attachment())
        self.broadcast({"joined": name})  # to the newcomer as well
        send(ws, READY)

    async def post(self, ws: WebSocket, session: Session, data: Any) -> None:
        text = js.to_string(js.field(data, "message"))
        if js.length(text) > MAX_MESSAGE:
            send(ws, {"error": "Message too long."})
            return
        latest = await self.latest_timestamp()
        await self.freeze()
        timestamp = max(int(time.time() * 1000), latest + 1)
        self.last_timestamp = timestamp
        payload = json.dumps({"name": session.name, "message": text, "timestamp": timestamp})
        await self.ctx.storage.put(key(timestamp), payload)
        self.broadcast(payload)

    async def leave(self, ws: WebSocket) -> None:
        session = self.sessions.get(ws) or Session.restore(ws.deserialize_attachment())
        if session.name is not None:
            await self.freeze()  # an unnamed session's roster still lists the leaver
        self.forget(ws)
        if session.name is not None:
            self.broadcast({"quit": session.name})

    # -- the unnamed window ---------------------------------------------------------------

    async def owed(self, ws: WebSocket, session: Session) -> list[str]:
        """The frames a session gets on naming itself, before its own join."""
        self.unchanged.pop(ws, None)
        window = session.window
        if window is None:  # nothing changed since it connected (or the room woke)
            roster, upto, frames = self.roster(), await self.latest_timestamp(), []
        else:
            roster, upto, frames = window.roster, window.upto, window.frames
        since = upto if session.since is None else session.since
        owed = [json.dumps({"joined": name}) for name in roster]
        newest_first = await self.ctx.storage.list(
            prefix=PREFIX, end=key(since + 1), reverse=True, limit=HISTORY
        )
        owed.extend(reversed(list(newest_first.values())))
        if upto > since:
            # Messages from before a hibernation that cost the window its frames.
            later = await self.ctx.storage.list(
                prefix=PREFIX, start=key(since + 1), end=key(upto + 1)
            )
            owed.extend(later.values())
        owed.extend(frames)
        return owed

    async def freeze(self) -> None:
        """Capture the room for every unnamed session that has seen no change yet.

        Call it before any change a broadcast announces: after it, those sessions
        collect the broadcasts instead.
        """
        if not self.unchanged:
            return
        roster, upto = self.roster(), await self.latest_timestamp()
        for session in self.unchanged.values():
            session.window = Window(roster, upto)
        self.unchanged.clear()

    # -- helpers --------------------------------------------------------------------------

    def roster(self) -> list[str]:
        return [s.name for s in self.sessions.values() if s.name is not None]

    def forget(self, ws: WebSocket) -> None:
        self.sessions.pop(ws, None)
        self.unchanged.pop(ws, None)

    def broadcast(self, message: dict[str, Any] | str) -> None:
        """Send to every named member; queue for the unnamed (freeze() first)."""
        text = message if isinstance(message, str) else json.dumps(message)
        for other, session in self.sessions.items():
            if session.name is not None:
                send(other, text)
            elif session.window is not None:
                session.window.frames.append(text)

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
