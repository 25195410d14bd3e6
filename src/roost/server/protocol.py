"""uvicorn's WebSocket protocol, with one fix: frames before a bad one are not lost.

uvicorn's sans-I/O protocol parses each chunk read from the socket and, when
the parser fails (an oversized message, 1009; a protocol error, 1002), closes
the connection *without* handing the app the complete messages parsed from
the same chunk before the bad frame.  Roost promises that a socket's failure
loses nothing that arrived before it (DESIGN §5), so this subclass delivers
those messages first, then reports the failure.
"""

from __future__ import annotations

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

__all__ = ["WebSocketProtocol"]


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """``WebSocketsSansIOProtocol`` that delivers every whole message before an error."""

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        self.handle_events()
        if self.conn.parser_exc is not None:
            self.handle_parser_exception()
