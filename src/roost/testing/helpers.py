"""Helpers that reach inside a local runtime, for tests only."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from ..ids import ObjectId
from ..object import DurableObject, ObjectState
from ..runtime.activation import ObjectRaised
from ..runtime.clock import ManualClock
from ..runtime.loopback import LoopbackRouter
from ..runtime.namespace import Namespace
from ..runtime.router import LocalRouter
from ..runtime.runtime import Runtime
from ..runtime.stubs import Stub
from ..storage.engine import ObjectStore, WriteBatch

__all__ = [
    "InjectedCommitFailure",
    "advance",
    "fail_commits",
    "list_object_ids",
    "run_alarm",
    "run_in_object",
]

T = TypeVar("T")


def _local_runtime(router: object) -> Runtime:
    if not isinstance(router, LocalRouter | LoopbackRouter):
        raise TypeError("roost.testing works with objects of an in-process Runtime only")
    return router._runtime


def _locate(stub: Stub) -> tuple[Runtime, str, ObjectId]:
    if not isinstance(stub, Stub):
        raise TypeError(f"expected a stub (env.NAME.get(...)), not {type(stub).__name__}")
    return _local_runtime(stub._router), stub._namespace, stub.id


async def run_in_object(
    stub: Stub, fn: Callable[[DurableObject, ObjectState], T | Awaitable[T]]
) -> T:
    """Run ``fn(instance, ctx)`` inside the object's live instance, as an event.

    The object is activated if needed, and ``fn`` runs through the input gate
    like any event, so it sees the instance's in-memory state and storage.
    Its result is returned as is (not copied), and its exceptions propagate
    unchanged.  ``fn`` may be sync or async.
    """
    runtime, namespace, object_id = _locate(stub)

    async def handler(instance: DurableObject) -> T:
        result = fn(instance, instance.ctx)
        if inspect.isawaitable(result):
            return await result
        return result

    try:
        return await runtime.host.dispatch(namespace, object_id, handler)
    except ObjectRaised as raised:
        raise raised.error from None


async def run_alarm(stub: Stub) -> bool:
    """Fire the object's pending alarm now, whatever its time.

    Returns True if ``alarm()`` ran (and returned), False if the object had no
    alarm.  An exception raised by ``alarm()`` propagates (and, as in
    production, the alarm stays set and a retry is scheduled).
    """
    runtime, namespace, object_id = _locate(stub)
    return await runtime.alarms.run_now(namespace, object_id)


def list_object_ids(namespace: Namespace) -> list[ObjectId]:
    """IDs of the objects of ``namespace`` (``env.NAME``) that have stored data.

    The same as ``runtime.list_object_ids(env.NAME)``, for tests that hold only ``env``.
    """
    if not isinstance(namespace, Namespace):
        raise TypeError(f"expected a namespace (env.NAME), not {type(namespace).__name__}")
    runtime = _local_runtime(namespace._router)
    return runtime.list_object_ids(namespace.name)


async def advance(runtime: Runtime, seconds: float) -> None:
    """Move the runtime's :class:`ManualClock` forward and let due alarms finish.

    Eviction timeouts and alarms that come due run (their commits included)
    before this returns.
    """
    clock = runtime.clock
    if not isinstance(clock, ManualClock):
        raise TypeError("advance() needs a runtime built with clock=ManualClock()")
    await clock.advance(seconds)
    await runtime.alarms.settle()


class InjectedCommitFailure(Exception):
    """The failure :func:`fail_commits` makes a commit raise."""


@contextlib.contextmanager
def fail_commits(stub: Stub) -> Iterator[list[WriteBatch]]:
    """Make every commit of the object fail while the ``with`` block runs.

    The object is reset (see docs/consistency.md): its held outputs fail (with
    :class:`~roost.CommitFailed`) and none of the failed batches' writes remain.
    The block gets the list of batches that were refused.
    """
    runtime, namespace, object_id = _locate(stub)
    engine = runtime.engine
    previous = engine.fault_hook
    refused: list[WriteBatch] = []

    def hook(store: ObjectStore, batch: WriteBatch) -> None:
        if store.namespace == namespace and store.object_id == object_id.hex:
            refused.append(batch)
            raise InjectedCommitFailure(f"commit of {namespace} {object_id.hex[:12]} refused")
        if previous is not None:
            previous(store, batch)

    engine.fault_hook = hook
    try:
        yield refused
    finally:
        engine.fault_hook = previous
