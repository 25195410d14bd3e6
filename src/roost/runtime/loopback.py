"""The loopback router: the local runtime, reached the way a remote one would be.

Each event is encoded to bytes (:mod:`.wire`), decoded again on the "owner's
side", and run in a task of its own with a fresh context, so nothing of the
caller (its task, its context variables, its live objects) reaches the object,
and nothing of the owner (its exceptions, its live results) reaches the caller
except as bytes.  The caller's deadline and cancellation stop its wait, not the
owner's event, as with a remote owner.  It exists to prove that the caller side
of Roost does not depend on where an object lives: the contract suite runs
through it (``pytest --router=loopback``).  It is slower than
:class:`~.router.LocalRouter` by an encode, a decode and a task per event, and
WebSocket upgrades do not cross it yet.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import TYPE_CHECKING, Any

from .. import codec
from ..errors import RoostError
from ..http import RequestMessage, ResponseMessage
from ..ids import ObjectId
from . import failures, wire
from .activation import ObjectRaised
from .router import Router

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["LoopbackRouter"]


class LoopbackRouter(Router):
    """Sends every event to this process's runtime as bytes (see the module docstring)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._owner_tasks: set[asyncio.Task[bytes]] = set()

    async def call(
        self,
        namespace: str,
        object_id: ObjectId,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        frame = wire.encode_call(namespace, object_id, method, args, kwargs)
        (value,) = wire.decode_reply(await self._send(frame, f"{namespace}.{method}()"))
        return value

    async def fetch(
        self, namespace: str, object_id: ObjectId, request: RequestMessage
    ) -> ResponseMessage:
        frame = wire.encode_fetch(namespace, object_id, request)
        reply = wire.decode_reply(await self._send(frame, f"{namespace} fetch()"))
        return wire.decode_response(reply)

    def abandon(self) -> None:
        for task in list(self._owner_tasks):
            task.cancel()

    async def _send(self, frame: bytes, what: str) -> bytes:
        deadlines = self._runtime.deadlines
        deadline = deadlines.enter()
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._receive(frame), context=contextvars.Context())
        self._owner_tasks.add(task)
        task.add_done_callback(self._owner_tasks.discard)
        try:
            # shield: the caller giving up does not cancel the owner's event.
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            deadlines.raise_if_expired(deadline, what)
            raise
        finally:
            deadlines.leave(deadline)

    async def _receive(self, frame: bytes) -> bytes:
        """The owner's side: decode, run the event, encode its outcome."""
        runtime = self._runtime
        try:
            kind, namespace, hex_id, name, *fields = codec.decode(frame)
            object_id = wire.object_id_of(runtime.env, namespace, hex_id, name)
            if kind == wire.CALL:
                method, args, kwargs = fields
                value = await runtime.host.invoke(namespace, object_id, method, tuple(args), kwargs)
                return wire.encode_result(value)
            request = wire.decode_request(fields)
            response = await runtime.host.deliver_fetch(namespace, object_id, request)
            return wire.encode_fetch_reply(response)
        except ObjectRaised as raised:
            return wire.encode_failure(failures.describe_raised(raised.error, raised.namespace))
        except RoostError as refused:
            return wire.encode_failure(failures.describe_refused(refused))
        except Exception as exc:  # a bug on the owner's side: still an answer, not a hang
            broken = RoostError(f"the object's side failed: {type(exc).__name__}: {exc}")
            return wire.encode_failure(failures.describe_refused(broken))
