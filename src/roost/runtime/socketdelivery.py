"""Delivery: what a connection's owner feeds into the kernel, as events.

Whoever holds a connection (the server's ``Connection``; later, a remote
router) hands each received message to :func:`deliver_message` and the end of
the connection to :func:`deliver_close`.  A held socket's message is queued for
``ws.receive()``; a hibernatable socket's message is answered by the
auto-response or becomes a ``websocket_message`` event through
:meth:`ObjectHost.dispatch`, and its end a ``websocket_close`` or
``websocket_error`` event.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Final

from ..errors import ObjectOverloaded, RoostError, RuntimeClosed, WebSocketError
from .activation import ObjectRaised
from .websocket import Message, SocketOwner, WebSocket, wake

if TYPE_CHECKING:
    from ..object import DurableObject

__all__ = ["deliver_close", "deliver_message"]

log = logging.getLogger("roost.websockets")

#: Received messages a held socket buffers before the peer is made to wait.
_INBOX_LIMIT: Final = 64
#: Close codes that mean the connection failed rather than closed (RFC 6455 §7.4.1).
_ERROR_CODES: Final = frozenset({1002, 1003, 1007, 1009, 1011})
#: Codes the server reports when no close frame was received.
_UNCLEAN_CODES: Final = frozenset({1005, 1006})


async def deliver_message(ws: WebSocket, message: Message) -> None:
    """Hand one received message to the socket's object.

    Held sockets queue it for ``receive()`` (waiting while the queue is full,
    so the peer feels back-pressure); hibernatable sockets get an auto-response
    or a ``websocket_message`` event.  Returns once the event is done.
    """
    if ws._closed:
        return  # we closed it; the peer had not seen our close frame yet
    if ws._mode == "held":
        assert ws._inbox is not None
        while len(ws._inbox) >= _INBOX_LIMIT and not ws._closed:
            ws._inbox_space = asyncio.get_running_loop().create_future()
            await ws._inbox_space
        ws._inbox.append(message)
        wake(ws._inbox_reader)
        return
    owner = ws._owner
    if owner is None:
        raise RuntimeError("a message arrived for a WebSocket that no object accepted")
    pair = owner.host.websockets.auto_response(owner.key)
    if pair is not None and message == pair[0]:
        ws._auto_response_time = owner.host.clock.time()
        ws._output("send", pair[1])
        return
    await _dispatch(ws, owner, "websocket_message", (ws, message))


async def deliver_close(ws: WebSocket, code: int, reason: str = "") -> None:
    """The connection ended: the peer closed it, it broke, or the server refused a
    frame (1002 protocol error, 1007 invalid UTF-8, 1009 too big).

    A hibernatable socket's object gets ``websocket_error(ws, error)`` for the
    failures when it defines that handler, else ``websocket_close(ws, code,
    reason, was_clean)``.  Held sockets end their ``receive()`` loop.
    """
    if ws._closed:
        ws._mark_closed(code, reason)
        return
    ws._mark_closed(code, reason)
    owner = ws._owner
    if ws._mode != "hibernatable" or owner is None:
        return
    cls = owner.host.classes[owner.namespace]
    if code in _ERROR_CODES and callable(getattr(cls, "websocket_error", None)):
        error = WebSocketError(
            f"WebSocket failed with close code {code}" + (f": {reason}" if reason else ""),
            code=code,
            reason=reason,
        )
        await _dispatch(ws, owner, "websocket_error", (ws, error))
    else:
        was_clean = code not in _UNCLEAN_CODES and code not in _ERROR_CODES
        await _dispatch(ws, owner, "websocket_close", (ws, code, reason, was_clean))


async def _dispatch(ws: WebSocket, owner: SocketOwner, name: str, args: tuple[Any, ...]) -> None:
    cls = owner.host.classes[owner.namespace]
    if not callable(getattr(cls, name, None)):
        if name == "websocket_message":
            log.warning("%s has no websocket_message(); message dropped", cls.__name__)
        return

    async def handler(instance: DurableObject) -> None:
        await getattr(instance, name)(*args)

    try:
        await owner.host.dispatch(owner.namespace, owner.object_id, handler)
    except ObjectRaised as raised:
        log.error(
            "%s() of %s %s raised",
            name,
            owner.namespace,
            owner.object_id.hex[:12],
            exc_info=raised.error,
        )
    except ObjectOverloaded:
        ws.close(1013, "object overloaded; try again later")
    except RuntimeClosed:
        ws.close(1001, "server shutting down")
    except RoostError as exc:  # the object was reset (a commit failed, ctx.abort())
        log.warning("%s() of %s lost to a reset: %s", name, owner.namespace, exc)
        ws.close(1011, "object reset")
