"""The WebSocket handle an object uses, and the transport under it.

A WebSocket connection is opened by the server (an ASGI ``websocket`` scope)
and handed to an object through its ``fetch``: the request the object receives
carries a :class:`WebSocket` handle as ``request.websocket``.  The object
accepts it in one of two styles (docs/websockets.md):

* **held**: ``ws.accept()``; the object reads with ``await ws.receive()`` or
  ``async for message in ws`` and stays in memory while the socket is open.
* **hibernatable**: ``ctx.accept_websocket(ws, tags)``; each message is an
  event delivered to ``websocket_message`` through :meth:`ObjectHost.dispatch`
  (input gate, serial events, output gate), so the object may be evicted while
  the socket stays open and the next message re-creates it.  What the object
  wants to remember per socket goes in ``ws.serialize_attachment(value)``.

The kernel does no I/O on a connection.  It talks to it through a
:class:`SocketTransport`, which the server implements over ASGI; a remote
router would implement it by forwarding frames to the process that holds the
connection.  The connection's owner feeds what it receives back in with
:func:`~roost.runtime.socketdelivery.deliver_message` and
:func:`~roost.runtime.socketdelivery.deliver_close`.  The sockets of each
object are kept by the runtime's :class:`~roost.runtime.socketregistry.SocketRegistry`.

Everything an object sends passes the output gate (docs/consistency.md): a frame
is handed to the transport only once every write made before ``send`` is
durable, frames leave in the order they were sent, and when a write fails the
held frames are dropped and the socket is closed with 1011.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

from .. import codec
from ..errors import InvalidState, ObjectReset, StorageLimitExceeded, WebSocketClosed
from .activation import Activation, current_activation

if TYPE_CHECKING:
    from ..ids import ObjectId
    from .host import ObjectHost

__all__ = ["SocketTransport", "WebSocket"]

log = logging.getLogger("roost.websockets")

Message = str | bytes
#: An object's key in the runtime: ``(namespace, object ID hex)``.
ObjectKey = tuple[str, str]
_Mode = Literal["pending", "held", "hibernatable"]
#: What a held frame waits for: nothing, a commit, or the error that broke the object.
_Gate: TypeAlias = "asyncio.Future[None] | BaseException | None"

#: Serialized attachments are capped like Cloudflare's (16 KiB).
MAX_ATTACHMENT_BYTES: Final = 16 * 1024
_MESSAGE_TYPES: Final = (str, bytes)
#: Codes an endpoint may put in a close frame, below the application range.
_SENDABLE_CODES: Final = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})


class SocketTransport(ABC):
    """The connection under a :class:`WebSocket`; implemented by the server.

    Every method returns at once; the transport keeps the order of the calls.
    """

    @abstractmethod
    def accept(self, subprotocol: str | None) -> None:
        """Complete the opening handshake."""

    @abstractmethod
    def send(self, message: Message) -> None:
        """Send one text (``str``) or binary (``bytes``) message."""

    def send_many(self, messages: Sequence[Message]) -> None:
        """Send several messages in order.

        The kernel calls it with every frame one release of the output gate
        frees for this socket, so a transport can write them with one system
        call; the default sends them one by one.
        """
        for message in messages:
            self.send(message)

    @abstractmethod
    def close(self, code: int, reason: str) -> None:
        """Close the connection (before ``accept``: refuse the handshake)."""


@dataclass(frozen=True, slots=True)
class SocketOwner:
    """The object that accepted a socket."""

    host: ObjectHost
    namespace: str
    object_id: ObjectId

    @property
    def key(self) -> ObjectKey:
        return (self.namespace, self.object_id.hex)


class WebSocket:
    """A WebSocket connection as an object sees it (``request.websocket``).

    Accept it with ``ws.accept()`` (held style) or
    ``self.ctx.accept_websocket(ws, tags)`` (hibernation), then return
    ``Response(status_code=101)`` from ``fetch``.  ``send`` and ``close`` never
    wait: their frames leave once the object's earlier writes are durable.
    """

    __slots__ = (
        "_transport",
        "_mode",
        "_owner",
        "_activation",
        "_tags",
        "_attachment",
        "_outbox",
        "_waiting",
        "_inbox",
        "_inbox_reader",
        "_inbox_space",
        "_closed",
        "_closed_here",
        "_close_code",
        "_close_reason",
        "_auto_response_time",
        "__weakref__",
    )

    def __init__(self, transport: SocketTransport) -> None:
        self._transport = transport
        self._mode: _Mode = "pending"
        self._owner: SocketOwner | None = None
        self._activation: Activation | None = None  # held style only
        self._tags: tuple[str, ...] = ()
        self._attachment: bytes | None = None
        #: Frames held by the output gate, each with what it waits for (made on first use).
        self._outbox: deque[tuple[_Gate, str, Any]] | None = None
        #: The commit this socket last asked to be flushed after.
        self._waiting: asyncio.Future[None] | None = None
        self._inbox: deque[Message] | None = None  # held style only (made by accept)
        self._inbox_reader: asyncio.Future[None] | None = None
        self._inbox_space: asyncio.Future[None] | None = None
        self._closed = False
        self._closed_here = False
        self._close_code: int | None = None
        self._close_reason = ""
        self._auto_response_time: float | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else self._mode
        return f"<WebSocket {state} tags={list(self._tags)}>"

    # -- state -------------------------------------------------------------------

    @property
    def accepted(self) -> bool:
        """True once an object accepted the socket (in either style)."""
        return self._mode != "pending"

    @property
    def hibernatable(self) -> bool:
        """True when accepted with ``ctx.accept_websocket``."""
        return self._mode == "hibernatable"

    @property
    def closed(self) -> bool:
        """True once either side closed the socket."""
        return self._closed

    @property
    def close_code(self) -> int | None:
        """The close code, once closed."""
        return self._close_code

    @property
    def tags(self) -> tuple[str, ...]:
        """The tags given to ``ctx.accept_websocket``."""
        return self._tags

    @property
    def auto_response_timestamp(self) -> float | None:
        """When the runtime last answered this socket's auto-response request
        (seconds since the epoch), or None."""
        return self._auto_response_time

    # -- accepting (held style; hibernation goes through ctx) ----------------------

    def accept(self, *, subprotocol: str | None = None) -> None:
        """Accept the socket and hold it: the object stays in memory while it is open.

        Call it inside the object's ``fetch``; read with :meth:`receive`.
        """
        act = _require_activation("ws.accept()")
        self._check_pending()
        self._mode = "held"
        self._activation = act
        self._owner = SocketOwner(act.host, act.namespace, act.object_id)
        self._inbox = deque()
        act.held_sockets += 1
        act.host.websockets.add(act.key, self)
        self._output("accept", subprotocol)

    def _check_pending(self) -> None:
        if self._mode != "pending":
            raise InvalidState("this WebSocket was already accepted")
        if self._closed:
            raise WebSocketClosed("the WebSocket closed before it was accepted")

    # -- sending -------------------------------------------------------------------

    def send(self, message: Message) -> None:
        """Send a text (``str``) or binary (``bytes``) message.

        Raises :class:`~roost.WebSocketClosed` when the socket is known to be closed.
        """
        # One test for the usual case; a broadcast calls this once per member.
        if self._closed or self._mode == "pending" or type(message) not in _MESSAGE_TYPES:
            self._check_send(message)
        self._output("send", message)

    def _check_send(self, message: object) -> None:
        if not isinstance(message, (str, bytes)):
            raise TypeError(f"send() takes str or bytes, not {type(message).__name__}")
        if self._mode == "pending":
            raise InvalidState("accept the WebSocket before sending on it")
        if self._closed:
            raise WebSocketClosed(
                "cannot send on a closed WebSocket",
                code=self._close_code or 1006,
                reason=self._close_reason,
            )

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket (before it is accepted: refuse the upgrade).

        A socket the object closes itself gets no ``websocket_close`` event.
        """
        if not (3000 <= code <= 4999 or code in _SENDABLE_CODES):
            raise ValueError(f"close code {code} may not be sent (RFC 6455 §7.4)")
        if len(reason.encode()) > 123:
            raise ValueError("a close reason is at most 123 bytes of UTF-8")
        if self._closed:
            return
        self._closed_here = True
        self._mark_closed(code, reason)
        self._output("close", (code, reason))

    def _output(self, kind: str, arg: Any) -> None:
        act = current_activation.get() or self._activation
        gate: _Gate = None
        if act is not None:
            gate = act.broken if act.broken is not None else act.storage._output_barrier()
        outbox = self._outbox
        if gate is None and not outbox:
            self._emit(kind, arg)  # nothing to wait for, nothing ahead of it
            return
        if outbox is None:
            outbox = self._outbox = deque()
        outbox.append((gate, kind, arg))
        if isinstance(gate, BaseException):
            if len(outbox) == 1:
                self._flush()
        elif gate is not None and (gate is not self._waiting or gate.done()):
            # One callback per commit for all of an object's sockets, not one per
            # frame: a broadcast to n sockets costs n appends here.  (A commit that
            # is already done, i.e. failed, gets a new callback: its first one ran.)
            self._waiting = gate
            assert act is not None
            act.host.websockets.flush_after(gate, self)

    def _flush(self) -> None:
        """Hand the transport every frame whose writes are durable, in order."""
        outbox = self._outbox
        if not outbox:
            return
        ready: list[Message] = []
        while outbox:
            gate, kind, arg = outbox[0]
            if gate is not None:
                if isinstance(gate, BaseException):
                    error: BaseException | None = gate
                elif not gate.done():
                    break  # flushed again when this commit is done
                elif gate.cancelled():
                    error = ObjectReset("the commit was cancelled")
                else:
                    error = gate.exception()
                if error is not None:
                    # A write before these frames failed: none of them may leave.
                    outbox.clear()
                    self._send_ready(ready)
                    log.warning("dropping WebSocket output after a failed write: %s", error)
                    self._mark_closed(1011, "object reset")
                    self._emit("close", (1011, "object reset"))
                    return
            outbox.popleft()
            if kind == "send":
                ready.append(arg)
            else:
                self._send_ready(ready)
                ready = []
                self._emit(kind, arg)
        self._send_ready(ready)

    def _send_ready(self, ready: list[Message]) -> None:
        if not ready:
            return
        try:
            if len(ready) == 1:
                self._transport.send(ready[0])
            else:
                self._transport.send_many(ready)
        except Exception:  # pragma: no cover - a transport bug must not break the object
            log.exception("WebSocket transport failed on send")

    def _emit(self, kind: str, arg: Any) -> None:
        try:
            if kind == "send":
                self._transport.send(arg)
            elif kind == "accept":
                self._transport.accept(arg)
            else:
                self._transport.close(*arg)
        except Exception:  # pragma: no cover - a transport bug must not break the object
            log.exception("WebSocket transport failed on %s", kind)

    # -- receiving (held style) ----------------------------------------------------

    async def receive(self) -> Message:
        """The next message of a held socket.

        Raises :class:`~roost.WebSocketClosed` once the socket is closed and
        every message received before the close was read.
        """
        if self._mode != "held":
            raise InvalidState(
                "receive() is for held sockets (ws.accept()); hibernatable sockets "
                "get their messages in websocket_message()"
            )
        inbox = self._inbox
        assert inbox is not None
        while not inbox:
            if self._closed:
                raise WebSocketClosed(
                    "the WebSocket is closed",
                    code=self._close_code or 1006,
                    reason=self._close_reason,
                )
            self._inbox_reader = asyncio.get_running_loop().create_future()
            await self._inbox_reader
        message = inbox.popleft()
        wake(self._inbox_space)
        act = self._activation
        # A message is an event: it waits while the object's input gate is closed.
        if act is not None and not act.gate.is_open:
            await act.gate.wait()
        return message

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            try:
                yield await self.receive()
            except WebSocketClosed:
                return

    # -- attachments -----------------------------------------------------------------

    def serialize_attachment(self, value: Any) -> None:
        """Keep ``value`` with the socket, across hibernation (any storable value,
        at most 16 KiB encoded)."""
        encoded = codec.encode(value)
        if len(encoded) - 1 > MAX_ATTACHMENT_BYTES:
            raise StorageLimitExceeded(
                f"WebSocket attachment is {len(encoded) - 1} bytes encoded, over the "
                f"limit of {MAX_ATTACHMENT_BYTES}"
            )
        self._attachment = encoded

    def deserialize_attachment(self) -> Any:
        """A copy of the value last given to :meth:`serialize_attachment` (or None)."""
        return None if self._attachment is None else codec.decode(self._attachment)

    # -- closing -------------------------------------------------------------------------

    def _mark_closed(self, code: int, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_code = code
        self._close_reason = reason
        owner = self._owner
        if owner is not None:
            owner.host.websockets.discard(owner.key, self)
        act = self._activation
        if act is not None:
            act.held_sockets -= 1
            act.last_used = act.host.clock.monotonic()
        wake(self._inbox_reader)
        wake(self._inbox_space)


def wake(future: asyncio.Future[None] | None) -> None:
    """Resolve ``future`` if something waits on it."""
    if future is not None and not future.done():
        future.set_result(None)


def _require_activation(what: str) -> Activation:
    act = current_activation.get()
    if act is None:
        raise InvalidState(f"{what} must be called by a durable object's code (inside fetch)")
    return act
