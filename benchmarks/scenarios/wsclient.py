"""A deliberately light WebSocket client for load generation (RFC 6455, text frames only).

The ``websockets`` library costs several microseconds per frame; a load generator
that must read 100,000+ frames per second on one core cannot afford that.  This
client does the handshake by hand, masks what it sends (a client must), and
parses the server's unmasked frames straight out of the read buffer.  It offers
no extensions, so the server never compresses (see benchmarks/README.md).
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import Callable
from typing import Final

_OP_TEXT: Final = 0x1
_OP_CLOSE: Final = 0x8
_OP_PING: Final = 0x9


def text_frame(payload: bytes) -> bytes:
    """A masked, final text frame (client to server)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | _OP_TEXT, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | _OP_TEXT, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | _OP_TEXT, 0x80 | 127, n)
    # XOR with the repeated mask, in one big-integer operation rather than per byte.
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + mask + masked


class Client(asyncio.Protocol):
    """One connection; ``on_text(payload)`` is called for each text message."""

    def __init__(self, on_text: Callable[[bytes], None] | None = None) -> None:
        self.on_text = on_text
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._handshake: asyncio.Future[None] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        if self._handshake is not None and not self._handshake.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[:end]).split(b"\r\n", 1)[0]
            del buf[: end + 4]
            if b" 101 " not in status + b" ":
                self._handshake.set_exception(ConnectionError(f"refused: {status!r}"))
                return
            self._handshake.set_result(None)
        self._parse()

    def _parse(self) -> None:
        buf = self._buffer
        pos = 0
        size = len(buf)
        on_text = self.on_text
        while size - pos >= 2:
            b0 = buf[pos]
            n = buf[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if size - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                head = 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            end = pos + head + n
            if end > size:
                break
            opcode = b0 & 0x0F
            if opcode == _OP_TEXT:
                if on_text is not None:
                    on_text(bytes(buf[pos + head : end]))
            elif opcode == _OP_CLOSE:
                body = bytes(buf[pos + head : end])
                self.close_code = struct.unpack("!H", body[:2])[0] if len(body) >= 2 else 1005
                if self.transport is not None:
                    self.transport.close()
            elif opcode == _OP_PING and self.transport is not None:
                pong = bytes(buf[pos + head : end])
                self.transport.write(bytes([0x8A, 0x80 | len(pong)]) + b"\0\0\0\0" + pong)
            pos = end
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handshake is not None and not self._handshake.done():
            self._handshake.set_exception(ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    # -- use -----------------------------------------------------------------------------

    def send_text(self, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.write(text_frame(payload))


async def connect(
    host: str,
    port: int,
    path: str,
    *,
    on_text: Callable[[bytes], None] | None = None,
    local_host: str | None = None,
) -> Client:
    """Open a connection and finish the opening handshake."""
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: Client(on_text),
        host,
        port,
        local_addr=(local_host, 0) if local_host else None,
    )
    client._handshake = loop.create_future()
    key = base64.b64encode(os.urandom(16)).decode()
    assert client.transport is not None
    client.transport.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await client._handshake
    return client
