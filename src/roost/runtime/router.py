"""The router: the seam between a stub and the object it names.

Everything above the router (stubs, front code) treats the object as remote.
:class:`LocalRouter` hands events to the runtime of this process; a later
cluster router forwards them to the process that owns the ID.  Whatever crosses
the seam crosses by value: arguments are copied on the caller's side, results on
the object's side, and an exception raised by the object's code comes back as a
:class:`~roost.RemoteError` of the same type name and message.
"""

from __future__ import annotations

import asyncio
import traceback
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from .. import codec
from ..errors import RemoteError, make_remote_error
from ..http import RequestMessage, ResponseMessage
from ..ids import ObjectId
from .activation import ObjectRaised

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["LocalRouter", "Router", "to_remote_error"]


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
            raise to_remote_error(raised) from None
        except asyncio.CancelledError:
            deadlines.raise_if_expired(deadline, f"{namespace}.{method}()")
            raise
        finally:
            deadlines.leave(deadline)

    async def fetch(
        self, namespace: str, object_id: ObjectId, request: RequestMessage
    ) -> ResponseMessage:
        deadlines = self._runtime.deadlines
        deadline = deadlines.enter()
        try:
            return await self._runtime.deliver_fetch(namespace, object_id, request)
        except ObjectRaised as raised:
            raise to_remote_error(raised) from None
        except asyncio.CancelledError:
            deadlines.raise_if_expired(deadline, f"{namespace} fetch()")
            raise
        finally:
            deadlines.leave(deadline)


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
