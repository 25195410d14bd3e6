"""The storage seam: what the runtime asks of a storage engine.

An engine holds the durable state of many objects.  The runtime talks to it
through two small interfaces:

* :class:`StorageEngine` opens one :class:`ObjectStore` per live object and is
  started and closed with the runtime.
* :class:`ObjectStore` reads one object's committed state (synchronously: an
  embedded engine answers from its page cache faster than a thread hop) and
  commits a :class:`WriteBatch` through one narrow, pipelined call,
  :meth:`ObjectStore.commit`.  That call is the place where a later cluster
  engine adds an ownership epoch and fails with "ownership lost".

Batches of one object are committed in the order they were submitted.  When a
batch fails, the store is *broken*: that batch and every later batch of it fail,
and the runtime resets the object.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "Durability",
    "ListQuery",
    "ObjectStore",
    "StorageEngine",
    "WriteBatch",
]

#: ``"full"``: a commit is fsynced before its outputs are released; survives
#: ``kill -9`` and power loss.  ``"process"``: written to the OS before release;
#: survives ``kill -9`` of the server, not a power cut or kernel crash.
Durability = Literal["full", "process"]


@dataclass(slots=True)
class WriteBatch:
    """One object's writes that commit atomically: all of them or none."""

    #: When true, every key of the object is deleted before ``writes`` apply.
    clear: bool = False
    #: Key to encoded value; ``None`` deletes the key.
    writes: dict[str, bytes | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.clear or bool(self.writes)


@dataclass(frozen=True, slots=True)
class ListQuery:
    """A key range of one object, already normalised to bounds.

    ``low`` is inclusive (exclusive when ``low_open``), ``high`` exclusive;
    ``None`` means unbounded.  ``limit`` counts rows after ordering.
    """

    low: str | None = None
    low_open: bool = False
    high: str | None = None
    reverse: bool = False
    limit: int | None = None

    def contains(self, key: str) -> bool:
        if self.low is not None and (key < self.low or (self.low_open and key == self.low)):
            return False
        return self.high is None or key < self.high


class ObjectStore(ABC):
    """One object's durable state inside an engine."""

    def __init__(self) -> None:
        self.broken: BaseException | None = None

    @abstractmethod
    def read(self, keys: list[str]) -> dict[str, bytes]:
        """Committed values of ``keys`` (absent keys are left out)."""

    @abstractmethod
    def read_range(self, query: ListQuery) -> list[tuple[str, bytes]]:
        """Committed ``(key, value)`` pairs in ``query``, in its order."""

    @abstractmethod
    def commit(self, batch: WriteBatch) -> asyncio.Future[None]:
        """Queue ``batch``; the future resolves once it is durable.

        Never blocks.  The future fails with :class:`roost.CommitFailed` when the
        batch could not be made durable, or when an earlier batch of this store
        failed.
        """


#: Called in the engine with each batch before it is applied; raising makes
#: that batch fail.  Tests use it to inject commit failures.
FaultHook = Callable[["ObjectStore", WriteBatch], None]


class StorageEngine(ABC):
    """A place where many objects keep their state."""

    def __init__(self) -> None:
        self.fault_hook: FaultHook | None = None

    @abstractmethod
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open files and start background work on ``loop``."""

    @abstractmethod
    async def close(self) -> None:
        """Finish every queued commit, then release all resources."""

    @abstractmethod
    def open_object(self, namespace: str, object_id: str) -> ObjectStore:
        """The store of one object (cheap: no I/O for an object never written)."""

    @abstractmethod
    def list_object_ids(self, namespace: str) -> list[str]:
        """IDs (hex) of the objects of ``namespace`` that have stored data."""

    def check_fault(self, store: ObjectStore, batch: WriteBatch) -> None:
        hook = self.fault_hook
        if hook is not None:
            hook(store, batch)
