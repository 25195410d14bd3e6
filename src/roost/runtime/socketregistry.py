"""The hibernation registry, and the ``ctx`` services over it.

The runtime keeps the open sockets of each object and its auto-response in a
:class:`SocketRegistry`, so they outlive the object's instance: a hibernatable
socket stays open while its object is evicted, and the next message re-creates
it.  The registry is plain bookkeeping with no I/O; it also holds, per pending
commit, the sockets whose frames wait for it (one callback per commit).

``ctx.accept_websocket``, ``ctx.get_websockets`` and the auto-response methods
of :class:`~roost.object.ObjectState` call the functions at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from .websocket import Message, ObjectKey, SocketOwner, WebSocket

if TYPE_CHECKING:
    from .activation import Activation

__all__ = ["SocketRegistry", "SocketStatistics"]

MAX_TAGS: Final = 10
MAX_TAG_LENGTH: Final = 256


@dataclass(frozen=True, slots=True)
class SocketStatistics:
    """How many sockets are open, and how many objects have some."""

    objects: int
    held: int
    hibernatable: int


class SocketRegistry:
    """The open sockets of each object and its auto-response, kept by the runtime
    so they outlive the object's instance (hibernation)."""

    def __init__(self) -> None:
        self._sockets: dict[ObjectKey, dict[WebSocket, None]] = {}
        self._auto: dict[ObjectKey, tuple[Message, Message]] = {}
        #: Sockets with frames held until a commit is done, per commit.
        self._held: dict[asyncio.Future[None], list[WebSocket]] = {}

    def flush_after(self, commit: asyncio.Future[None], ws: WebSocket) -> None:
        """Flush ``ws`` once ``commit`` is done (with every other socket waiting on it)."""
        waiting = self._held.get(commit)
        if waiting is None:
            self._held[commit] = [ws]
            commit.add_done_callback(self._release)
        else:
            waiting.append(ws)

    def _release(self, commit: asyncio.Future[None]) -> None:
        for ws in self._held.pop(commit, ()):
            ws._flush()

    def add(self, key: ObjectKey, ws: WebSocket) -> None:
        self._sockets.setdefault(key, {})[ws] = None

    def discard(self, key: ObjectKey, ws: WebSocket) -> None:
        sockets = self._sockets.get(key)
        if sockets is not None:
            sockets.pop(ws, None)
            if not sockets:
                del self._sockets[key]

    def of(self, key: ObjectKey) -> list[WebSocket]:
        """Open sockets of one object, in the order they were accepted."""
        return list(self._sockets.get(key, ()))

    def all(self) -> list[WebSocket]:
        return [ws for sockets in self._sockets.values() for ws in sockets]

    def set_auto_response(self, key: ObjectKey, pair: tuple[Message, Message] | None) -> None:
        if pair is None:
            self._auto.pop(key, None)
        else:
            self._auto[key] = pair

    def auto_response(self, key: ObjectKey) -> tuple[Message, Message] | None:
        return self._auto.get(key)

    def object_reset(self, key: ObjectKey) -> None:
        """The object's instance was dropped: its held sockets die with it."""
        for ws in self.of(key):
            if ws._mode == "held":
                ws.close(1011, "object reset")

    def statistics(self) -> SocketStatistics:
        """Counts for metrics and tests."""
        held = sum(1 for ws in self.all() if ws._mode == "held")
        return SocketStatistics(
            objects=len(self._sockets), held=held, hibernatable=len(self.all()) - held
        )


# -- ctx services (called through ObjectState) ------------------------------------------


def accept_hibernatable(act: Activation, ws: WebSocket, tags: Iterable[str]) -> None:
    """``ctx.accept_websocket``: accept ``ws`` for the hibernation API."""
    if not isinstance(ws, WebSocket):
        raise TypeError(
            f"accept_websocket() takes the request's WebSocket, not {type(ws).__name__}"
        )
    if isinstance(tags, str):
        raise TypeError("tags is an iterable of str, not a str")
    tag_list = list(tags)
    if len(tag_list) > MAX_TAGS:
        raise ValueError(f"a WebSocket takes at most {MAX_TAGS} tags")
    for tag in tag_list:
        if not isinstance(tag, str) or not tag or len(tag) > MAX_TAG_LENGTH:
            raise ValueError(f"tags are non-empty str of at most {MAX_TAG_LENGTH} characters")
    ws._check_pending()
    ws._mode = "hibernatable"
    ws._tags = tuple(tag_list)
    ws._owner = SocketOwner(act.host, act.namespace, act.object_id)
    act.host.websockets.add(act.key, ws)
    ws._output("accept", None)


def get_websockets(act: Activation, tag: str | None) -> list[WebSocket]:
    """``ctx.get_websockets``: the object's open hibernatable sockets."""
    return [
        ws
        for ws in act.host.websockets.of(act.key)
        if ws._mode == "hibernatable" and (tag is None or tag in ws._tags)
    ]


def set_auto_response(act: Activation, pair: tuple[Message, Message] | None) -> None:
    """``ctx.set_websocket_auto_response``."""
    if pair is not None:
        for part in pair:
            if not isinstance(part, (str, bytes)):
                raise TypeError("auto-response request and response are str or bytes")
    act.host.websockets.set_auto_response(act.key, pair)


def get_auto_response(act: Activation) -> tuple[Message, Message] | None:
    """``ctx.get_websocket_auto_response``."""
    return act.host.websockets.auto_response(act.key)
