"""uvicorn's WebSocket protocol, with two changes Roost needs.

1. **Frames before a bad one are not lost.**  uvicorn's sans-I/O protocol
   parses each chunk read from the socket and, when the parser fails (an
   oversized message, 1009; a protocol error, 1002), closes the connection
   *without* handing the app the complete messages parsed from the same chunk
   before the bad frame.  Roost promises that a socket's failure loses nothing
   that arrived before it (DESIGN §5), so this subclass delivers those messages
   first, then reports the failure.

2. **A direct way out for data frames.**  An ASGI ``websocket.send`` costs an
   await, a dict, a frame built by ``websockets`` and one ``write`` system call
   per message.  A chat room broadcasting to a hundred sockets pays that a
   hundred times per message.  The protocol therefore offers the app (in the
   scope's extensions, under :data:`FRAMES_EXTENSION`) a plain function that
   writes a list of messages as frames with *one* ``write``; a frame for the
   same message object is built once and reused for every socket (server frames
   are unmasked, so they are the same bytes for everyone).  With per-message
   deflate negotiated the frames depend on each connection's compressor, so
   they go through ``websockets`` instead, still in one write.  Handshakes and
   close frames keep going through ASGI ``send``.

And three bounds (``docs/limits.md``, ``roost.server.limits``):

* a message over ``ws_max_size`` (or any protocol error) is answered with its
  close frame (1009, 1002, ...) and a lingering close (:mod:`.linger`), not a
  TCP reset that would destroy the close frame before the client read it;
* unfinished messages of all connections together (the fragments received
  of a fragmented message, and the part of a frame still arriving) hold at
  most ``max_fragmented_bytes``; the connection that goes beyond is closed
  with 1009;
* a client that stops reading: once the transport's buffer is over its
  high-water mark, frames wait in a list here (a broadcast's frame shared, not
  copied into each transport's buffer as asyncio's transports do; one
  ``write`` when the client reads again), and beyond
  ``max_send_buffer_bytes`` waiting the connection is dropped and the object
  hears close code 1008.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Sequence
from typing import Any, Final, Protocol

import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.frames import Frame
from websockets.protocol import State

from .limits import limits_of
from .linger import LINGER_SECONDS

log = logging.getLogger("roost.server")

__all__ = ["FRAMES_EXTENSION", "FrameWriter", "WebSocketProtocol", "encode_frame"]

#: Scope extension holding the connection's :data:`FrameWriter`.
FRAMES_EXTENSION: Final = "roost.websocket.frames"


class FrameWriter(Protocol):
    """What the server offers under :data:`FRAMES_EXTENSION`."""

    def write_frames(self, messages: Sequence[str | bytes]) -> int | None:
        """Write ``messages`` as data frames at once; return the bytes now waiting
        to be sent, or None when the connection takes no more data frames
        (closing, gone, or just dropped for not reading)."""

    def abort(self) -> None:
        """Drop the connection at once, with whatever is still buffered."""


#: Frames kept for reuse: the messages of one broadcast, sent to every socket.
_CACHE_ENTRIES: Final = 256
#: Larger messages are framed per socket (no cache holds a large message alive).
_CACHE_MAX_BYTES: Final = 16 * 1024
_frames: dict[int, tuple[str | bytes, bytes]] = {}


def encode_frame(message: str | bytes) -> bytes:
    """A final, unmasked server frame: text for ``str``, binary for ``bytes``.

    Reuses the frame of the same message *object* while it is cached; the
    cache holds the message, so its ``id`` cannot be reused meanwhile.
    """
    hit = _frames.get(id(message))
    if hit is not None and hit[0] is message:
        return hit[1]
    if isinstance(message, str):
        payload, opcode = message.encode(), 0x81
    else:
        payload, opcode = message, 0x82
    size = len(payload)
    if size < 126:
        frame = bytes((opcode, size)) + payload
    elif size < 65536:
        frame = struct.pack("!BBH", opcode, 126, size) + payload
    else:
        frame = struct.pack("!BBQ", opcode, 127, size) + payload
    if size <= _CACHE_MAX_BYTES:
        if len(_frames) >= _CACHE_ENTRIES:
            _frames.clear()
        _frames[id(message)] = (message, frame)
    return frame


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """``WebSocketsSansIOProtocol`` that delivers every whole message before an
    error and offers a direct frame writer (see the module docstring)."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits, self.fragment_budget = limits_of(config)
        self.max_send_buffer = limits.max_send_buffer_bytes
        # This connection's share of the fragment budget: its unfinished
        # message's fragments, and the frame still arriving in the parser.
        self.fragments_held = 0
        self.unparsed_held = 0
        self.failed = False  # a close frame for an error was sent: the rest is dropped
        # Frames for a client that is not reading (the transport is paused).
        self.waiting: list[bytes] | None = None
        self.waiting_bytes = 0

    def data_received(self, data: bytes) -> None:
        if self.failed:
            return  # the close frame is sent: what still arrives is only drained
        self.conn.receive_data(data)
        # The frames parsed now leave the parser's buffer: counted as fragments
        # (if unfinished) instead.
        if self.unparsed_held:
            self.fragment_budget.give_back(self.unparsed_held)
            self.unparsed_held = 0
        self.handle_events()
        if self.failed:
            return
        if self.conn.parser_exc is not None:
            self.handle_parser_exception()
            return
        # A frame still arriving waits in the parser's buffer, up to ws_max_size
        # per connection: it counts too, or many connections could each hold one.
        unparsed = len(self.conn.reader.buffer)
        if unparsed and not self.fragment_budget.take(unparsed):
            self._over_budget()
            return
        self.unparsed_held = unparsed

    def connection_lost(self, exc: Exception | None) -> None:
        self._release_held()
        self.waiting = None
        super().connection_lost(exc)

    # -- errors: the close frame, then a lingering close ---------------------------------

    def handle_parser_exception(self) -> None:
        assert self.conn.close_sent is not None
        self.failed = True
        self._release_held()
        code, reason = self.conn.close_sent.code, self.conn.close_sent.reason
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.close_sent = True
        transport = self.transport
        if transport.is_closing():
            return
        # Frames waiting for a slow reader were sent before the close frame:
        # they go first (bounded by max_send_buffer_bytes, and by the linger).
        waiting, self.waiting = self.waiting, None
        self.waiting_bytes = 0
        if waiting:
            transport.write(b"".join(waiting))
        transport.write(b"".join(self.conn.data_to_send()))
        # Keep reading (and dropping, see data_received) until the client
        # closes, so that closing leaves nothing unread: no reset.
        if transport.can_write_eof():
            transport.write_eof()
        if self.read_paused:
            self.read_paused = False
            transport.resume_reading()
        # uvicorn closes the transport when the app returns unless a close is
        # pending on this timer (0.35 has no such timer and leaves it open).
        if getattr(self, "close_timer", None) is None:
            self.close_timer = self.loop.call_later(LINGER_SECONDS, transport.close)

    def shutdown(self) -> None:
        if self.failed:  # its close frame is sent (uvicorn 0.35 would send another)
            self.transport.close()
            return
        super().shutdown()

    def handle_ping(self) -> None:
        if not self.failed:  # after the close frame and EOF, nothing more is written
            super().handle_ping()

    # -- fragmented messages: a bound across connections ---------------------------------

    def handle_text(self, event: Frame) -> None:
        if self._held_within_budget(event):
            super().handle_text(event)

    def handle_bytes(self, event: Frame) -> None:
        if self._held_within_budget(event):
            super().handle_bytes(event)

    def handle_cont(self, event: Frame) -> None:
        if self._held_within_budget(event):
            super().handle_cont(event)

    def _held_within_budget(self, event: Frame) -> bool:
        if self.failed:
            return False
        if event.fin:
            self._release_held()  # the message is whole: handed to the app
            return True
        size = len(event.data)
        if self.fragment_budget.take(size):
            self.fragments_held += size
            return True
        self._over_budget()
        return False

    def _over_budget(self) -> None:
        log.warning("Unfinished WebSocket messages over the server's bound; closing (1009)")
        self.frames = []
        self.conn.fail(1009, "unfinished messages over the server's bound")
        self.handle_parser_exception()

    def _release_held(self) -> None:
        held = self.fragments_held + self.unparsed_held
        if held:
            self.fragment_budget.give_back(held)
            self.fragments_held = self.unparsed_held = 0

    # -- a client that does not read ---------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.waiting is None:
            self.waiting = []

    def resume_writing(self) -> None:
        super().resume_writing()
        waiting, self.waiting = self.waiting, None
        self.waiting_bytes = 0
        if waiting and not self.transport.is_closing():
            self.transport.write(b"".join(waiting))

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # None: the handshake was refused
            scope["extensions"][FRAMES_EXTENSION] = self

    def write_frames(self, messages: Sequence[str | bytes]) -> int | None:
        """Write ``messages`` as data frames with one ``write`` (see :class:`FrameWriter`)."""
        transport = self.transport
        # (A lost connection's transport is closing: uvicorn 0.35 has no
        # ``disconnected`` flag.)
        if self.close_sent or self.conn.state is not State.OPEN or transport.is_closing():
            return None
        if self.conn.extensions:
            conn = self.conn
            for message in messages:
                if isinstance(message, str):
                    conn.send_text(message.encode())
                else:
                    conn.send_binary(message)
            data = b"".join(conn.data_to_send())
        elif len(messages) == 1:
            data = encode_frame(messages[0])
        else:
            data = b"".join([encode_frame(m) for m in messages])
        waiting = self.waiting
        if waiting is None:
            transport.write(data)
            size: int = transport.get_write_buffer_size()
            return size
        # Over the high-water mark: the client is not reading.  Keep the frame
        # (it is shared with the other sockets of a broadcast, not copied).
        waiting.append(data)
        self.waiting_bytes += len(data)
        if self.waiting_bytes > self.max_send_buffer:
            log.warning("WebSocket client is not reading; dropping the connection")
            self.waiting = None
            self.waiting_bytes = 0
            self.queue.put_nowait(
                {"type": "websocket.disconnect", "code": 1008, "reason": "client too slow"}
            )
            self.close_sent = True
            transport.abort()
            return None
        return self.waiting_bytes

    def abort(self) -> None:
        """Drop the connection at once, with whatever is still buffered."""
        self.transport.abort()
