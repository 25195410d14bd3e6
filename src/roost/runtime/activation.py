"""One live instance of one object, and the path every event takes into it.

An event (RPC call, fetch, alarm, WebSocket message) goes:

1. **admission**: refused at once with :class:`~roost.ObjectOverloaded` when the
   object already has ``max_queue`` events waiting or running (rule 8);
2. **input gate**: waits while the gate is closed (rule 2);
3. **run**: the handler runs in the caller's task; storage calls never suspend,
   so it interleaves with other events only at outside awaits;
4. **output gate**: the result (already copied by value) waits until every write
   made before it is durable (rule 4); the object meanwhile serves the next event.

A failed commit *resets* the activation: the instance is dropped, its storage
refuses further use, waiting events move to a fresh activation, and results
held by the output gate fail (rules 3-4).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ObjectOverloaded, ObjectReset
from ..ids import ObjectId
from ..object import DurableObject, ObjectState
from ..storage.kv import Storage
from .gates import InputGate

if TYPE_CHECKING:
    from .host import ObjectHost

__all__ = ["Activation", "ObjectRaised", "current_activation"]

T = TypeVar("T")
log = logging.getLogger("roost.runtime")

#: The activation whose event is running in the current task, if any.
current_activation: contextvars.ContextVar[Activation | None] = contextvars.ContextVar(
    "roost_current_activation", default=None
)


class ObjectRaised(Exception):
    """Carries an exception raised by an object's own code to the router."""

    def __init__(self, error: BaseException, namespace: str) -> None:
        super().__init__(error)
        self.error = error
        self.namespace = namespace


class _Moved(Exception):
    """The activation was reset before this event started: deliver it elsewhere."""


class Activation:
    __slots__ = (
        "host",
        "namespace",
        "cls",
        "object_id",
        "key",
        "storage",
        "gate",
        "instance",
        "events",
        "pending_outputs",
        "background",
        "last_used",
        "epoch",
        "broken",
        "held_sockets",
        "__weakref__",
    )

    def __init__(
        self,
        host: ObjectHost,
        namespace: str,
        cls: type[DurableObject],
        object_id: ObjectId,
        epoch: int,
    ) -> None:
        loop = host.loop
        self.host = host
        self.namespace = namespace
        self.cls = cls
        self.object_id = object_id
        self.key = (namespace, object_id.hex)
        self.gate = InputGate(loop)
        self.storage = Storage(
            host.engine.open_object(
                namespace, object_id.hex, sql=cls.sql_enabled, name=object_id.name
            ),
            limits=host.limits,
            loop=loop,
            on_failure=self._storage_failed,
            gate=self.gate,
        )
        self.instance: DurableObject | None = None
        self.events = 0
        self.pending_outputs = 0
        self.background: set[asyncio.Future[Any]] = set()
        self.last_used = host.clock.monotonic()
        #: The runtime's sweep epoch when an event last reached this object.
        self.epoch = epoch
        self.broken: BaseException | None = None
        self.held_sockets = 0

    # -- lifecycle ---------------------------------------------------------------

    def construct(self) -> None:
        cls = self.cls
        instance = cls.__new__(cls)
        # Only the instance holds its ctx (which points back here): once the
        # instance is dropped (eviction, reset), nothing forms a cycle and the
        # activation is freed at once rather than by the cyclic GC.
        ctx = ObjectState(self)
        instance.ctx = ctx
        instance.env = self.host.env
        if _init_takes_args(cls):
            instance.__init__(ctx, self.host.env)  # type: ignore[misc]
        else:
            instance.__init__()  # type: ignore[misc]
        self.instance = instance

    @property
    def idle(self) -> bool:
        """True when eviction would lose nothing and interrupt nothing (rule 7)."""
        return (
            self.events == 0
            and self.pending_outputs == 0
            and not self.background
            and not self.held_sockets
            and self.gate.is_open
            and not self.storage._has_pending_writes
        )

    def reset(self, reason: BaseException) -> None:
        """Drop the instance; its storage refuses use; held outputs fail."""
        if self.broken is not None:
            return
        self.broken = reason
        self.storage._close(reason)
        self.instance = None
        self.host.forget(self)
        self.gate.wake_all()
        for task in list(self.background):
            task.cancel()
        self.host.websockets.object_reset(self.key)

    def _storage_failed(self, error: BaseException) -> None:
        log.error(
            "commit failed for %s %s; resetting it: %s", self.namespace, self.object_id, error
        )
        self.reset(error)

    def abort(self, reason: str) -> None:
        error = ObjectReset(f"object aborted: {reason}")
        self.reset(error)
        raise error

    # -- the event path ----------------------------------------------------------

    async def run_event(
        self,
        handler: Callable[[DurableObject], Awaitable[Any]],
        finish: Callable[[Any], T] | None = None,
    ) -> T:
        """Deliver one event; raise :class:`_Moved` if it must go to a new activation.

        ``finish`` (e.g. the by-value copy of an RPC result) runs on the result
        as soon as the handler returns, inside the event, so an error it raises
        is the object's, like any other.
        """
        if self.events >= self.host.max_queue:
            raise ObjectOverloaded(
                f"{self.namespace} object {self.object_id.hex[:12]}… is overloaded: "
                f"{self.events} events already queued or running (max_queue="
                f"{self.host.max_queue})"
            )
        self.events += 1
        failure: Exception | None = None
        try:
            if not self.gate.is_open:
                await self.gate.wait()
            if self.broken is not None or self.instance is None:
                raise _Moved
            self.last_used = self.host.clock.monotonic()
            token = current_activation.set(self)
            try:
                result = await handler(self.instance)
                if finish is not None:
                    result = finish(result)
            except Exception as exc:
                failure = exc
            finally:
                current_activation.reset(token)
        finally:
            self.events -= 1
        # The output gate: the result leaves once every write made so far is
        # durable (inline, not a helper coroutine: this runs on every event).
        barrier = self.storage._output_barrier()
        if barrier is not None:
            self.pending_outputs += 1
            try:
                await barrier
            finally:
                self.pending_outputs -= 1
                self.last_used = self.host.clock.monotonic()
        if self.broken is not None:
            if isinstance(self.broken, ObjectReset):
                raise self.broken
            raise ObjectReset(f"object was reset before its output was released: {self.broken}")
        if failure is not None:
            raise ObjectRaised(failure, self.namespace) from None
        return result  # type: ignore[no-any-return]  # T when finish is None

    # -- ctx services --------------------------------------------------------------

    def block_concurrency_while(
        self, fn: Callable[[], Awaitable[T]] | Coroutine[Any, Any, T]
    ) -> asyncio.Task[T]:
        work = fn if inspect.isawaitable(fn) else fn()
        self.gate.close()

        async def blocked() -> T:
            try:
                return await work
            except BaseException as exc:
                if not isinstance(exc, asyncio.CancelledError):
                    self.reset(ObjectReset(f"block_concurrency_while callback failed: {exc!r}"))
                raise
            finally:
                self.gate.open()

        token = current_activation.set(self)
        try:
            task = self.host.loop.create_task(blocked())
        finally:
            current_activation.reset(token)
        self._track(task)
        return task

    def wait_until(self, work: Awaitable[Any]) -> None:
        token = current_activation.set(self)
        try:
            task = asyncio.ensure_future(work, loop=self.host.loop)
        finally:
            current_activation.reset(token)
        self._track(task)

    def _track(self, task: asyncio.Future[Any]) -> None:
        self.background.add(task)

        def done(finished: asyncio.Future[Any]) -> None:
            self.background.discard(finished)
            self.last_used = self.host.clock.monotonic()
            if not finished.cancelled() and finished.exception() is not None:
                log.error(
                    "background work of %s %s failed",
                    self.namespace,
                    self.object_id,
                    exc_info=finished.exception(),
                )

        task.add_done_callback(done)


_init_arity: dict[type, bool] = {}


def _init_takes_args(cls: type) -> bool:
    known = _init_arity.get(cls)
    if known is None:
        init = cls.__init__  # type: ignore[misc]
        try:
            params = list(inspect.signature(init).parameters.values())[1:]
        except (TypeError, ValueError):
            known = True
        else:
            known = (
                bool(params)
                and not all(p.kind is p.KEYWORD_ONLY or p.default is not p.empty for p in params)
                or any(p.kind is p.VAR_POSITIONAL for p in params)
            )
        _init_arity[cls] = known
    return known
