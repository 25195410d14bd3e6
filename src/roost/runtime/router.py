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
or what it was chained to, none of which a remote owner could send
(:mod:`.failures`).  :class:`~.loopback.LoopbackRouter` sends every event as
bytes, as a remote router must.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from ..errors import RoostError
from ..http import RequestMessage, ResponseMessage
from ..ids import ObjectId
from . import failures
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

    def abandon(self) -> None:  # noqa: B027 - most routers hold nothing to give up
        """The runtime is closing: give up on events still in flight."""


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
            return await self._runtime.host.invoke(namespace, object_id, method, args, kwargs)
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
            return await self._runtime.host.deliver_fetch(namespace, object_id, request)
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


def to_remote_error(raised: ObjectRaised) -> RoostError:
    """The caller-side copy of an exception raised inside an object."""
    return failures.rebuild(failures.describe_raised(raised.error, raised.namespace))


def crossed(error: RoostError) -> RoostError:
    """The caller-side copy of a Roost error raised by the owner's runtime:
    its class, message and plain attributes, as a remote router rebuilds it."""
    return failures.rebuild(failures.describe_refused(error))
