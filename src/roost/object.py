"""The class users subclass, and the ``ctx`` it is given."""

from __future__ import annotations

import inspect
import operator
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar

if TYPE_CHECKING:
    from .ids import ObjectId
    from .runtime.activation import Activation
    from .runtime.namespace import Env
    from .runtime.websocket import WebSocket
    from .storage.kv import Storage

__all__ = ["DurableObject", "ObjectState"]

T = TypeVar("T")

#: Methods the runtime calls itself; a stub never reaches them as RPC.
HANDLER_NAMES: Final = frozenset(
    {"fetch", "alarm", "websocket_message", "websocket_close", "websocket_error"}
)


class ObjectState:
    """``self.ctx``: what the runtime gives one live instance of an object."""

    __slots__ = ("_activation", "_storage")

    def __init__(self, activation: Activation) -> None:
        self._activation = activation
        self._storage = activation.storage

    @property
    def id(self) -> ObjectId:
        """This object's ID."""
        return self._activation.object_id

    def now(self) -> datetime:
        """The current time on the runtime's clock, as an aware UTC ``datetime``.

        Use it for alarm times (``set_alarm(self.ctx.now() + timedelta(...))``)
        and timestamps: under :class:`~roost.ManualClock` it is the test's time,
        where ``datetime.now()`` would be the machine's.
        """
        return datetime.fromtimestamp(self._activation.host.clock.time(), UTC)

    if TYPE_CHECKING:

        @property
        def storage(self) -> Storage:
            """This object's private, durable storage."""

    else:
        # A C getter: read on nearly every event, where a Python property's
        # frame is measurable.
        storage = property(
            operator.attrgetter("_storage"), doc="This object's private, durable storage."
        )

    def block_concurrency_while(
        self, fn: Callable[[], Awaitable[T]] | Coroutine[Any, Any, T]
    ) -> Awaitable[T]:
        """Run ``fn`` while no other event may start; return an awaitable of its result.

        Usable in ``__init__`` (without awaiting) to load state before the first
        event.  If ``fn`` raises, the object is reset.
        """
        return self._activation.block_concurrency_while(fn)

    def wait_until(self, work: Awaitable[Any]) -> None:
        """Keep the object alive until ``work`` finishes, after the event returns."""
        self._activation.wait_until(work)

    # -- WebSockets (hibernation API, docs/websockets.md) ---------------------------

    def accept_websocket(self, ws: WebSocket, tags: Iterable[str] = ()) -> None:
        """Accept ``ws`` (from ``request.websocket``) for the hibernation API.

        Its messages arrive as ``websocket_message(ws, message)`` events and its
        end as ``websocket_close(ws, code, reason, was_clean)`` (or
        ``websocket_error(ws, error)`` when it failed).  The socket does not keep
        the object in memory: after an idle timeout the instance is evicted, and
        the next message re-creates it.  ``tags`` (at most 10 str) select sockets
        in :meth:`get_websockets`.
        """
        from .runtime import socketregistry

        socketregistry.accept_hibernatable(self._activation, ws, tags)

    def get_websockets(self, tag: str | None = None) -> list[WebSocket]:
        """This object's open hibernatable sockets (those with ``tag``, if given),
        in the order they were accepted; also after the object was re-created."""
        from .runtime import socketregistry

        return socketregistry.get_websockets(self._activation, tag)

    def get_tags(self, ws: WebSocket) -> list[str]:
        """The tags ``ws`` was accepted with."""
        return list(ws.tags)

    def set_websocket_auto_response(
        self, request: str | bytes | None = None, response: str | bytes | None = None
    ) -> None:
        """Answer a message equal to ``request`` with ``response`` without waking
        the object (e.g. ``"ping"`` → ``"pong"``); call with no arguments to stop.

        The pair stays set while the process runs, across hibernation.
        """
        from .runtime import socketregistry

        if (request is None) != (response is None):
            raise TypeError("give both request and response, or neither")
        pair = None if request is None or response is None else (request, response)
        socketregistry.set_auto_response(self._activation, pair)

    def get_websocket_auto_response(self) -> tuple[str | bytes, str | bytes] | None:
        """The ``(request, response)`` pair set by :meth:`set_websocket_auto_response`."""
        from .runtime import socketregistry

        return socketregistry.get_auto_response(self._activation)

    def get_websocket_auto_response_timestamp(self, ws: WebSocket) -> float | None:
        """When ``ws`` was last answered by the auto-response (epoch seconds), or None."""
        return ws.auto_response_timestamp

    def abort(self, reason: str = "aborted") -> None:
        """Reset the object now: drop this instance and fail its held outputs.

        Raises :class:`~roost.ObjectReset` in the calling code.
        """
        self._activation.abort(reason)


class DurableObject:
    """Base class of durable objects.

    Subclass it and write ``async def`` methods; every public one is callable
    through a stub.  ``self.ctx`` (an :class:`ObjectState`) and ``self.env`` (the
    app's bindings) are set before ``__init__`` runs, so a subclass may define
    ``__init__(self, ctx, env)`` (calling ``super().__init__(ctx, env)`` or not)
    or no ``__init__`` at all.

    Declare ``class Notes(roost.DurableObject, sql=True)`` for the SQL API.
    """

    #: True for classes declared with ``sql=True``.
    sql_enabled: ClassVar[bool] = False

    ctx: ObjectState
    env: Env

    def __init_subclass__(cls, *, sql: bool | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if sql is not None:
            cls.sql_enabled = bool(sql)

    def __init__(self, ctx: ObjectState, env: Env) -> None:
        self.ctx = ctx
        self.env = env


#: The RPC methods found so far.  Only found ones are kept: a caller can name
#: any number of methods that do not exist, and a refusal may take the slow path.
_rpc_methods: set[tuple[type, str]] = set()


def is_rpc_method(cls: type[DurableObject], name: str) -> bool:
    """True when stubs may call ``name`` on instances of ``cls``."""
    key = (cls, name)
    if key in _rpc_methods:
        return True
    attr = inspect.getattr_static(cls, name, None)
    if isinstance(attr, (staticmethod, classmethod)):
        attr = attr.__func__
    found = (
        not name.startswith("_")
        and name not in HANDLER_NAMES
        and not hasattr(DurableObject, name)
        and inspect.iscoroutinefunction(attr)
    )
    if found:
        _rpc_methods.add(key)
    return found
