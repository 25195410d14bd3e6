"""One ASGI WebSocket connection, as the transport under a kernel ``WebSocket``.

The kernel hands frames to :class:`Connection` through the non-blocking
methods of :class:`~roost.runtime.SocketTransport`.  The handshake
answer and close frames go to the ASGI server through a writer task, in order.
Data frames, once the socket is accepted and nothing is queued before them,
take the server's direct frame writer when it offers one (Roost's uvicorn
protocol does, see ``protocol.py``): all the frames one release of the output
gate frees for a socket leave in one ``write``, with no task, await or ASGI
message per frame.  The connection's own task (the ASGI
app call) reads frames and feeds them to the object with
:func:`~roost.runtime.deliver_message`, one at a time: a socket's
messages are delivered in order, and while one is being handled the next stays
with the server, so a fast client feels back-pressure instead of filling memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from typing import Final

import starlette.responses
from starlette.types import Message, Receive, Scope, Send

from ..runtime import SocketTransport, WebSocket, deliver_close, deliver_message
from .protocol import FRAMES_EXTENSION, FrameWriter

__all__ = ["Connection"]

log = logging.getLogger("roost.server")

#: Bytes of outgoing messages queued for the ASGI ``send`` path before the
#: connection is dropped (1011): a client that does not read must not make the
#: server hold unbounded memory.  (The direct frame path has the protocol's
#: own bound, ``max_send_buffer_bytes``.)
MAX_PENDING_BYTES: Final = 16 * 1024 * 1024
#: ASGI messages that answer a WebSocket handshake.
_ANSWERS: Final = frozenset(
    {"websocket.accept", "websocket.close", "websocket.http.response.start"}
)


class Connection(SocketTransport):
    """An ASGI ``websocket`` scope: the server side of one kernel ``WebSocket``."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        # Made on first use: an idle hibernated connection should cost little.
        self._outgoing: deque[Message] | None = None
        self._pending_bytes = 0
        self._writer: asyncio.Task[None] | None = None
        self._writing = False  # the writer task is between two sends
        #: The server's direct frame writer, once the handshake was accepted.
        self._frames: FrameWriter | None = None
        self._client_gone = False
        self._delivering = False
        self._stopping: tuple[int, str] | None = None
        self.websocket: WebSocket | None = None
        #: True once the handshake was answered (accepted or refused).
        self.answered = False
        self._finished: asyncio.Event | None = None

    @property
    def finished(self) -> asyncio.Event:
        """Set once the connection's task is done (made on first use)."""
        if self._finished is None:
            self._finished = asyncio.Event()
        return self._finished

    # -- the transport the kernel sees --------------------------------------------

    def accept(self, subprotocol: str | None) -> None:
        self._push({"type": "websocket.accept", "subprotocol": subprotocol, "headers": []})

    def send(self, message: str | bytes) -> None:
        self.send_many((message,))

    def send_many(self, messages: Sequence[str | bytes]) -> None:
        if self._client_gone:
            return
        frames = self._frames
        if frames is not None and not self._outgoing and not self._writing:
            # The protocol drops a client that is not reading (max_send_buffer_bytes).
            if frames.write_frames(messages) is None:
                self._client_gone = True
            return
        for message in messages:
            self._send_queued(message)

    def _send_queued(self, message: str | bytes) -> None:
        if self._client_gone:
            return
        self._pending_bytes += len(message)
        if self._pending_bytes > MAX_PENDING_BYTES:
            log.warning("WebSocket client is not reading; dropping the connection")
            self._outgoing = None
            self._pending_bytes = 0
            self._push({"type": "websocket.close", "code": 1011, "reason": "client too slow"})
            self._client_gone = True  # nothing more is queued for it
            return
        if isinstance(message, str):
            self._push({"type": "websocket.send", "text": message})
        else:
            self._push({"type": "websocket.send", "bytes": message})

    def close(self, code: int, reason: str) -> None:
        self._frames = None  # nothing may follow the close frame
        self._push({"type": "websocket.close", "code": code, "reason": reason})

    def _push(self, message: Message) -> None:
        if self._outgoing is None:
            self._outgoing = deque()
        self._outgoing.append(message)
        if self._writer is None or self._writer.done():
            # One writer at a time keeps frames in order; it ends when the queue is empty.
            self._writer = asyncio.get_running_loop().create_task(self._write_all())

    async def _write_all(self) -> None:
        self._writing = True
        try:
            while self._outgoing:
                message = self._outgoing.popleft()
                kind = message["type"]
                if kind == "websocket.send":
                    data = message.get("text") or message.get("bytes") or b""
                    self._pending_bytes -= len(data)
                try:
                    await self._send(message)
                except Exception as exc:  # the client went away (uvicorn: ClientDisconnected)
                    log.debug("WebSocket send failed: %r", exc)
                    self._client_gone = True
                    self._outgoing = None
                    return
                if kind == "websocket.accept":
                    self.answered = True
                    self._frames = (self.scope.get("extensions") or {}).get(FRAMES_EXTENSION)
                elif kind == "websocket.close":
                    self.answered = True
        finally:
            # Done: keep no finished task or empty queue per (mostly idle) connection.
            self._writing = False
            self._writer = None
            if not self._outgoing:
                self._outgoing = None

    # -- the front's view: its own receive/send, until it hands the socket over ----------

    async def front_send(self, message: Message) -> None:
        """``send`` for front code that answers the handshake itself."""
        if message["type"] in _ANSWERS:
            self.answered = True
        await self._send(message)

    # -- the connection's task -------------------------------------------------------------

    async def run(self, ws: WebSocket) -> None:
        """Feed received frames to the object until the connection ends."""
        self.websocket = ws
        if self._stopping is not None:  # shutdown began while the front was busy
            ws.close(*self._stopping)
        try:
            while True:
                event = await self._receive()
                kind = event["type"]
                if kind == "websocket.receive":
                    text = event.get("text")
                    data = text if text is not None else event.get("bytes") or b""
                    self._delivering = True
                    try:
                        await deliver_message(ws, data)
                    finally:
                        self._delivering = False
                    if self._stopping is not None:
                        ws.close(*self._stopping)
                elif kind == "websocket.disconnect":
                    self._client_gone = True
                    code = int(event.get("code") or 1005)
                    await deliver_close(ws, code, event.get("reason") or "")
                    return
        finally:
            if not ws.closed:
                # The loop ended without a close (an error, a cancelled task):
                # the object must still hear of it and drop the socket, or its
                # get_websockets() would keep returning a dead connection.
                self._client_gone = True
                with contextlib.suppress(Exception):
                    await asyncio.shield(deliver_close(ws, 1006, "connection lost"))
            await self._drain()
            self.finished.set()

    async def _drain(self) -> None:
        writer = self._writer
        if writer is not None and not writer.done():
            # Frames already released (e.g. the close frame) still go out.
            try:
                await asyncio.wait_for(asyncio.shield(writer), timeout=5.0)
            except TimeoutError:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer

    def shut_down(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Close after the message being handled (if any) finishes."""
        ws = self.websocket
        self._stopping = (code, reason)
        if ws is not None and not self._delivering:
            ws.close(code, reason)

    async def refuse(self, response: starlette.responses.Response | None) -> None:
        """Answer a handshake no object accepted: with ``response`` when the
        server can send HTTP responses to upgrade requests, else close (403)."""
        await self._drain()
        if self.answered or self._client_gone:
            return
        self.answered = True
        extensions = self.scope.get("extensions") or {}
        if response is not None and response.status_code == 101:
            log.error("fetch() answered 101 but no object accepted the WebSocket")
            response = None
        if response is not None and "websocket.http.response" in extensions:
            await response(self.scope, self._receive, self._send)
        else:
            await self._send({"type": "websocket.close", "code": 1008, "reason": ""})
