"""A lingering close: how a server refuses a client that is still sending.

Closing a socket while the peer's data sits unread in it makes the kernel
answer with a TCP reset, and a reset can destroy the client's copy of the
error response (or close frame) before the client reads it: a client sending a
too-long URL or a too-large WebSocket message would see "connection reset"
instead of 414 or 1009.  So after the refusal is written the server shuts down
its sending side (the client reads the answer, then end of stream), reads and
drops whatever still arrives, and closes when the client does or after
:data:`LINGER_SECONDS`, whichever comes first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

__all__ = ["LINGER_SECONDS", "Lingering", "linger"]

#: The longest a refused connection is read (and dropped) before it is closed.
LINGER_SECONDS: Final = 2.0


class Lingering(asyncio.Protocol):
    """The protocol of a refused connection: drops data, closes on end of stream."""

    def __init__(self, transport: asyncio.Transport, seconds: float = LINGER_SECONDS) -> None:
        self.transport = transport
        self.timer = asyncio.get_running_loop().call_later(seconds, transport.close)

    def data_received(self, data: bytes) -> None:
        return None  # the refusal is sent: nothing more is read into memory

    def eof_received(self) -> None:
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.timer.cancel()


def linger(transport: asyncio.Transport, *, then: Callable[[], None] | None = None) -> None:
    """Close ``transport`` after what it is sending, without a reset (see above).

    ``then`` runs at once: the caller's own cleanup, as the old protocol hears
    nothing more from the transport.
    """
    if transport.is_closing():
        if then is not None:
            then()
        return
    protocol = Lingering(transport)
    transport.set_protocol(protocol)
    if then is not None:
        then()
    if transport.can_write_eof():
        transport.write_eof()
    # Reading may have been paused (back-pressure, pipelining): drain it.
    transport.resume_reading()
