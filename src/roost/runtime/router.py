"""The router: the seam between a stub and the object it names.

Everything above the router (stubs, front code) treats the object as remote.
:class:`LocalRouter` hands events to the runtime of this process; a later
cluster router forwards them to the process that owns the ID.  Whatever crosses
the seam crosses by value: arguments are copied on the caller's side, results on
the object's side, an exception raised by the object's code comes back as a
:class:`~roost.RemoteError` of the same type name and message, and the runtime's
own refusals (:class:`~roost.ObjectOverloaded`, :class:`~roost.ObjectReset`,
:class:`~roost.RuntimeClosed`, ...) come back as new errors of the same class
and message (:func:`crossed`): never the owner's live exception, its traceback
or what it was chained to, none of which a remote owner could send.
"""

from __future__ import annotations

import asyncio
import traceback
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from .. import codec, errors
from ..errors import RemoteError, RoostError, make_remote_error
from ..http import RequestMessage, ResponseMessage
from ..ids import ObjectId
from .activation import ObjectRaised

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["LocalRouter", "Router", "crossed", "to_remote_error"]


class Router(ABC):
    """Delivers calls addressed to objects."""

    @abstractmethod
    async def call(
        self,
        namespace: str,
        object_id: ObjectId,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Call ``method`` on the object; arguments are already copied by value."""

    @abstractmethod
    async def fetch(
        self, namespace: str, object_id: ObjectId, request: RequestMessage
    ) -> ResponseMessage:
        """Deliver an HTTP request to the object's ``fetch`` handler."""


class LocalRouter(Router):
    """Routes every call to the runtime of this process."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def call(
        self,
        namespace: str,
        object_id: ObjectId,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        deadlines = self._runtime.deadlines
        deadline = deadlines.enter()
        try:
            return await self._runtime.invoke(namespace, object_id, method, args, kwargs)
        except ObjectRaised as raised:
            failure: RoostError = to_remote_error(raised)
        except RoostError as refused:
            failure = crossed(refused)
        except asyncio.CancelledError:
            deadlines.raise_if_expired(deadline, f"{namespace}.{method}()")
            raise
        finally:
            deadlines.leave(deadline)
        raise failure  # outside the handler: nothing of the owner's side is chained to it

    async def fetch(
        self, namespace: str, object_id: ObjectId, request: RequestMessage
    ) -> ResponseMessage:
        deadlines = self._runtime.deadlines
        deadline = deadlines.enter()
        try:
            return await self._runtime.deliver_fetch(namespace, object_id, request)
        except ObjectRaised as raised:
            failure: RoostError = to_remote_error(raised)
        except RoostError as refused:
            failure = crossed(refused)
        except asyncio.CancelledError:
            deadlines.raise_if_expired(deadline, f"{namespace} fetch()")
            raise
        finally:
            deadlines.leave(deadline)
        raise failure  # outside the handler: nothing of the owner's side is chained to it


def to_remote_error(raised: ObjectRaised) -> RemoteError:
    """The caller-side copy of an exception raised inside an object."""
    error = raised.error
    cls = type(error)
    try:
        args = codec.copy_value(tuple(error.args))
    except (TypeError, ValueError):
        args = (str(error),)
    remote = make_remote_error(
        cls.__module__,
        cls.__qualname__,
        args,
        retryable=bool(getattr(error, "retryable", False)),
        overloaded=bool(getattr(error, "overloaded", False)),
    )
    remote.remote_traceback = "".join(traceback.format_exception(error))
    # A note, not an attribute only: tracebacks printed by logging and pytest
    # show notes, so the object's side of the failure appears with the caller's.
    remote.add_note(
        f"Raised inside a {raised.namespace} object, where the traceback was:\n"
        + remote.remote_traceback.rstrip()
    )
    return remote


#: The Roost errors a router rebuilds by name; any other becomes a RoostError.
_ROOST_ERRORS: dict[str, type[RoostError]] = {
    name: cls
    for name, cls in vars(errors).items()
    if isinstance(cls, type) and issubclass(cls, RoostError) and not issubclass(cls, RemoteError)
}
#: Attributes of an error that carry data (WebSocketError.code, SqlError.sqlite_error, ...).
_PLAIN = (str, int, float, bool, type(None))


def crossed(error: RoostError) -> RoostError:
    """The caller-side copy of a Roost error raised by the owner's runtime:
    its class (looked up by name among Roost's own), message and plain
    attributes, as a remote router rebuilds it from bytes."""
    cls = _ROOST_ERRORS.get(type(error).__name__, RoostError)
    copy = cls.__new__(cls)
    Exception.__init__(copy, str(error))
    for name, value in vars(error).items():
        if isinstance(value, _PLAIN):
            setattr(copy, name, value)
    cause = error.__cause__
    if cause is not None:
        # The cause (an OSError of a full disk, say) stays on the owner's side;
        # its text comes along, where logging and pytest print it.
        copy.add_note(f"Caused on the object's side by {type(cause).__name__}: {cause}")
    return copy
