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
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, Final, Protocol

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

__all__ = ["FRAMES_EXTENSION", "FrameWriter", "WebSocketProtocol", "encode_frame"]

#: Scope extension holding the connection's :data:`FrameWriter`.
FRAMES_EXTENSION: Final = "roost.websocket.frames"


class FrameWriter(Protocol):
    """What the server offers under :data:`FRAMES_EXTENSION`."""

    def write_frames(self, messages: Sequence[str | bytes]) -> int | None:
        """Write ``messages`` as data frames at once; return the bytes now waiting
        in the transport's buffer, or None when the connection takes no more
        data frames (closing or gone)."""

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

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        self.handle_events()
        if self.conn.parser_exc is not None:
            self.handle_parser_exception()

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # None: the handshake was refused
            scope["extensions"][FRAMES_EXTENSION] = self

    def write_frames(self, messages: Sequence[str | bytes]) -> int | None:
        """Write ``messages`` as data frames with one ``write`` (see :class:`FrameWriter`)."""
        transport = self.transport
        if (
            self.close_sent
            or self.disconnected
            or self.conn.state is not State.OPEN
            or transport.is_closing()
        ):
            return None
        if self.conn.extensions:
            conn = self.conn
            for message in messages:
                if isinstance(message, str):
                    conn.send_text(message.encode())
                else:
                    conn.send_binary(message)
            transport.write(b"".join(conn.data_to_send()))
        elif len(messages) == 1:
            transport.write(encode_frame(messages[0]))
        else:
            transport.write(b"".join([encode_frame(m) for m in messages]))
        size: int = transport.get_write_buffer_size()
        return size

    def abort(self) -> None:
        """Drop the connection at once, with whatever is still buffered."""
        self.transport.abort()
