"""The KV API one object sees as ``self.ctx.storage``.

Reads are answered from an in-memory cache of everything this instance has read
or written (the object is the only writer of its data, so the cache is always
right); a miss reads the committed state from the engine.  Writes update the
cache at once and join the object's open :class:`~roost.storage.engine.WriteBatch`.
The batch is sealed on the next turn of the event loop (that is, at the first
await on anything outside storage), by the engine, right before the group
commit it joins; the engine settles the batch's :class:`CommitFuture` while the
object goes on working.  The runtime's output gate waits on
:meth:`Storage._output_barrier` before it releases a result.

The alarm is written the same way (it joins the batch), and for SQL objects so
are the statements run through :attr:`Storage.sql` (they run at once in the
open transaction of the object's database, and the batch's seal commits them).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, TypeVar, overload

from .. import codec
from ..errors import (
    InvalidState,
    ObjectReset,
    SqlNotEnabled,
    StorageError,
    StorageLimitExceeded,
)
from .engine import CommitFuture, ListQuery, ObjectStore, WriteBatch
from .ranges import Entry as _Entry
from .ranges import make_query, merge_range
from .sql import SqlStorage

if TYPE_CHECKING:
    from .objectdb import ObjectDatabase

__all__ = ["CommitFuture", "EventGate", "Storage", "StorageLimits", "Transaction"]


class EventGate(Protocol):
    """What storage needs of its object's input gate: to hold other events
    while it waits for the disk (``sync``).  The runtime's gate is one; storage
    does not depend on the runtime."""

    def close(self) -> None: ...

    def open(self) -> None: ...


T = TypeVar("T")

_ABSENT: Final[_Entry] = (None, None)
_NOT_DECODED: Final = object()


@dataclass(frozen=True, slots=True)
class StorageLimits:
    """Size limits enforced at ``put``; a write over a limit changes nothing."""

    max_key_bytes: int = 2048
    max_value_bytes: int = 128 * 1024


def alarm_time_ms(when: datetime | int | float) -> int:
    """An alarm time as epoch milliseconds: from an aware ``datetime`` or a number of ms."""
    if isinstance(when, datetime):
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValueError(
                "set_alarm() needs an aware datetime (with tzinfo, e.g. "
                "datetime.now(timezone.utc)), or epoch milliseconds"
            )
        return round(when.timestamp() * 1000)
    if isinstance(when, bool) or not isinstance(when, (int, float)):
        raise TypeError(
            f"set_alarm() takes a datetime or epoch milliseconds, not {type(when).__name__}"
        )
    if when != when or when in (float("inf"), float("-inf")):
        raise ValueError(f"set_alarm() needs a finite time, not {when!r}")
    return round(when)


def _entry_value(key: str, entry: _Entry) -> Any:
    encoded, value = entry
    if value is _NOT_DECODED:
        return _decode(key, encoded)  # type: ignore[arg-type]
    return value


def _decode(key: str, encoded: bytes) -> Any:
    try:
        return codec.decode(encoded)
    except ValueError as exc:
        # Only a value written by an older Roost (before nesting was bounded)
        # or damaged on disk gets here; delete() still removes it.
        raise StorageError(f"the value stored under {key!r} cannot be read: {exc}") from None


class Done(Generic[T]):
    """The result of a storage call, ready at once, to be awaited.

    Storage calls finish before they return (reads come from the cache or a
    local read, writes go to the open batch), so ``put`` and ``delete`` take
    effect even when not awaited, as in Cloudflare; ``await`` gives the result
    and never suspends, so no other event can slip in.
    """

    __slots__ = ("_value",)

    def __init__(self, value: T) -> None:
        self._value = value

    def __await__(self) -> Generator[Any, None, T]:
        return self._value
        yield  # a generator that never yields: await returns at once

    def __repr__(self) -> str:
        return f"<storage result {self._value!r}>"


_DONE: Final[Done[None]] = Done(None)


def _ignore_failure(error: BaseException) -> None:
    """The failure callback of a closed storage (see :meth:`Storage._close`)."""


class _KvApi(ABC):
    """The public KV methods, written once over four primitives."""

    __slots__ = ("_limits",)

    def __init__(self, limits: StorageLimits) -> None:
        self._limits = limits

    @abstractmethod
    def _lookup(self, key: str) -> _Entry: ...

    @abstractmethod
    def _lookup_many(self, keys: list[str]) -> dict[str, _Entry]: ...

    @abstractmethod
    def _write(self, key: str, entry: _Entry) -> None: ...

    @abstractmethod
    def _clear(self) -> None: ...

    @abstractmethod
    def _range(self, query: ListQuery) -> list[tuple[str, bytes]]: ...

    @abstractmethod
    def _alarm_value(self) -> int | None: ...

    @abstractmethod
    def _alarm_write(self, alarm_ms: int | None) -> None: ...

    def _check_key(self, key: object) -> str:
        if not isinstance(key, str):
            raise TypeError(f"storage keys are str, not {type(key).__name__}")
        try:
            size = len(key.encode())
        except UnicodeEncodeError:
            raise ValueError(f"storage key {key!r} is not valid Unicode text") from None
        if size > self._limits.max_key_bytes:
            raise StorageLimitExceeded(
                f"storage key of {size} bytes exceeds the limit of "
                f"{self._limits.max_key_bytes} bytes (key starts {key[:40]!r})"
            )
        return key

    def _encode(self, key: str, value: Any) -> _Entry:
        encoded = codec.encode(value)
        size = len(encoded) - 1
        if size > self._limits.max_value_bytes:
            raise StorageLimitExceeded(
                f"value for key {key[:40]!r} is {size} bytes encoded, over the limit of "
                f"{self._limits.max_value_bytes} bytes"
            )
        return encoded, value if codec.is_immutable_scalar(value) else _NOT_DECODED

    def _check_keys(self, keys: object) -> list[str]:
        if isinstance(keys, (str, bytes)) or not isinstance(keys, Iterable):
            raise TypeError(f"expected a str key or a list of keys, not {type(keys).__name__}")
        return [self._check_key(k) for k in keys]

    @overload
    def get(self, key: str) -> Done[Any]: ...
    @overload
    def get(self, key: Iterable[str]) -> Done[dict[str, Any]]: ...

    def get(self, key: str | Iterable[str]) -> Done[Any]:
        """The value stored under ``key`` (None when absent), or for a list of keys
        a dict of the keys that exist, in the order asked."""
        if isinstance(key, str):
            key = self._check_key(key)
            return Done(_entry_value(key, self._lookup(key)))
        keys = self._check_keys(key)
        found = self._lookup_many(keys)
        return Done({k: _entry_value(k, found[k]) for k in keys if found[k][0] is not None})

    @overload
    def put(self, key: str, value: Any) -> Done[None]: ...
    @overload
    def put(self, key: Mapping[str, Any]) -> Done[None]: ...

    def put(self, key: str | Mapping[str, Any], value: Any = None) -> Done[None]:
        """Store ``value`` under ``key``, or every pair of a dict, in one batch.

        Raises ``TypeError`` for a value Roost cannot store and
        :class:`~roost.StorageLimitExceeded` over a limit; then nothing is written.
        """
        if isinstance(key, str):
            entry = self._encode(self._check_key(key), value)
            self._write(key, entry)
            return _DONE
        if not isinstance(key, Mapping):
            raise TypeError(f"put() takes a str key or a dict, not {type(key).__name__}")
        entries = [(self._check_key(k), self._encode(k, v)) for k, v in key.items()]
        for k, entry in entries:
            self._write(k, entry)
        return _DONE

    @overload
    def delete(self, key: str) -> Done[bool]: ...
    @overload
    def delete(self, key: Iterable[str]) -> Done[int]: ...

    def delete(self, key: str | Iterable[str]) -> Done[bool] | Done[int]:
        """Delete ``key`` (returns whether it existed), or a list of keys
        (returns how many existed)."""
        if isinstance(key, str):
            existed = self._lookup(self._check_key(key))[0] is not None
            self._write(key, _ABSENT)
            return Done(existed)
        keys = self._check_keys(key)
        found = self._lookup_many(keys)
        for k in keys:
            self._write(k, _ABSENT)
        return Done(sum(1 for k in set(keys) if found[k][0] is not None))

    def delete_all(self) -> Done[None]:
        """Delete every key of this object."""
        self._clear()
        return _DONE

    def list(
        self,
        *,
        start: str | None = None,
        start_after: str | None = None,
        end: str | None = None,
        prefix: str | None = None,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Done[dict[str, Any]]:
        """Key-value pairs in key order (descending with ``reverse``).

        ``start`` is inclusive, ``start_after`` exclusive, ``end`` exclusive;
        ``prefix`` keeps only keys that begin with it; ``limit`` caps the count.
        """
        query = make_query(start, start_after, end, prefix, reverse, limit)
        return Done({k: _decode(k, v) for k, v in self._range(query)})

    async def transaction(self, fn: Callable[[Transaction], Awaitable[T]]) -> T:
        """Run ``fn(txn)`` atomically: its writes apply together when it returns,
        and not at all when it raises or calls ``txn.rollback()``.

        It covers KV writes and the alarm; for SQL use ``sql.transaction_sync``.
        """
        txn = Transaction(self)
        try:
            result = await fn(txn)
        finally:
            txn._done = True
        if not txn._rolled_back:
            if txn._cleared:
                self._clear()
            for key, entry in txn._overlay.items():
                self._write(key, entry)
            if txn._alarm_set:
                self._alarm_write(txn._alarm)
        return result

    def get_alarm(self) -> Done[int | None]:
        """The time of the object's alarm in epoch milliseconds, or ``None``.

        While ``alarm()`` runs, this is ``None`` unless the handler has set a
        new alarm since it started.
        """
        return Done(self._alarm_value())

    def set_alarm(self, when: datetime | int | float) -> Done[None]:
        """Set the object's one alarm to ``when`` (an aware ``datetime`` or epoch
        milliseconds), replacing any other.  A time in the past fires at once.
        Compute it from ``self.ctx.now()``, the runtime's clock (a test's
        :class:`~roost.ManualClock` included), rather than ``datetime.now()``.

        The alarm is written with the object's other writes, atomically.
        """
        self._alarm_write(alarm_time_ms(when))
        return _DONE

    def delete_alarm(self) -> Done[None]:
        """Cancel the object's alarm, if any."""
        self._alarm_write(None)
        return _DONE


class Transaction(_KvApi):
    """The storage view inside ``storage.transaction(fn)``: same methods, plus
    :meth:`rollback`.  Its writes are seen through it, and by no one else until
    ``fn`` returns."""

    __slots__ = ("_parent", "_overlay", "_cleared", "_rolled_back", "_done", "_alarm", "_alarm_set")

    def __init__(self, parent: _KvApi) -> None:
        super().__init__(parent._limits)
        self._parent = parent
        self._overlay: dict[str, _Entry] = {}
        self._cleared = False
        self._rolled_back = False
        self._done = False
        self._alarm: int | None = None
        self._alarm_set = False

    def rollback(self) -> None:
        """Discard this transaction's writes when ``fn`` returns."""
        self._rolled_back = True

    def _check_live(self) -> None:
        if self._done:
            raise InvalidState("this transaction has finished; use ctx.storage outside it")

    def _lookup(self, key: str) -> _Entry:
        self._check_live()
        entry = self._overlay.get(key)
        if entry is not None:
            return entry
        return _ABSENT if self._cleared else self._parent._lookup(key)

    def _lookup_many(self, keys: list[str]) -> dict[str, _Entry]:
        self._check_live()
        missing = [k for k in keys if k not in self._overlay]
        below = {} if self._cleared or not missing else self._parent._lookup_many(missing)
        return {k: self._overlay.get(k) or below.get(k, _ABSENT) for k in keys}

    def _write(self, key: str, entry: _Entry) -> None:
        self._check_live()
        self._overlay[key] = entry

    def _clear(self) -> None:
        self._check_live()
        self._overlay.clear()
        self._cleared = True

    def _range(self, query: ListQuery) -> list[tuple[str, bytes]]:
        self._check_live()
        return merge_range(query, self._overlay, None if self._cleared else self._parent._range)

    def _alarm_value(self) -> int | None:
        self._check_live()
        return self._alarm if self._alarm_set else self._parent._alarm_value()

    def _alarm_write(self, alarm_ms: int | None) -> None:
        self._check_live()
        self._alarm = alarm_ms
        self._alarm_set = True


class Storage(_KvApi):
    """One object's private, strongly consistent, durable storage (``ctx.storage``).

    Its public names are exactly the documented KV API: ``get``, ``put``,
    ``delete``, ``delete_all``, ``list``, ``transaction``, ``get_alarm``,
    ``set_alarm``, ``delete_alarm``, ``sync`` and ``sql``.

    The runtime drives the commit pipeline and the alarm through members with a
    leading underscore, because an object calling them would break itself (close
    its own storage, or lose its alarm's bookkeeping), and they are no part of
    the object's API:

    - ``_output_barrier()``: what a result must wait for (the output gate, in
      ``runtime/activation.py``, ``stubs.py``, ``websocket.py``, ``runtime.py``);
    - ``_has_pending_writes``: whether eviction would lose a write (``Activation.idle``);
    - ``_close(reason)``: refuse every later operation (reset and eviction);
    - ``_alarm_due()``, ``_alarm_started()``, ``_alarm_finished(succeeded=)`` and
      ``_durable_alarm()``: the alarm scheduler's view (``runtime/alarms.py``).
    """

    __slots__ = (
        "_store",
        "_loop",
        "_cache",
        "_complete",
        "_batch",
        "_tail",
        "_gate",
        "_broken",
        "_on_failure",
        "_sql",
        "_alarm",
        "_alarm_known",
        "_alarm_running",
        "_alarm_touched",
    )

    def __init__(
        self,
        store: ObjectStore,
        *,
        limits: StorageLimits,
        loop: asyncio.AbstractEventLoop,
        on_failure: Callable[[BaseException], None],
        gate: EventGate | None = None,
    ) -> None:
        super().__init__(limits)
        self._store = store
        self._gate = gate
        self._loop = loop
        self._cache: dict[str, _Entry] = {}
        # True when the cache holds every key: a miss then means "absent".
        self._complete = False
        self._batch: WriteBatch | None = None
        self._tail: CommitFuture | None = None
        self._broken: BaseException | None = None
        self._on_failure = on_failure
        self._sql: SqlStorage | None = None
        self._alarm: int | None = None
        self._alarm_known = False
        # True while alarm() runs; then whether it has set or deleted the alarm.
        self._alarm_running = False
        self._alarm_touched = False

    @property
    def sql(self) -> SqlStorage:
        """The SQL API (:class:`~roost.storage.sql.SqlStorage`); only on classes
        declared with ``sql=True``, else :class:`~roost.SqlNotEnabled`."""
        if self._sql is None:
            if not self._store.sql_capable:
                raise SqlNotEnabled(
                    "storage.sql is only available to classes declared with "
                    "`class MyObject(roost.DurableObject, sql=True)`"
                )
            self._sql = SqlStorage(self)
        return self._sql

    # -- SQL (used by SqlStorage) ------------------------------------------------

    def _sql_database(self) -> ObjectDatabase:
        self._check_open()
        db = self._store.database
        assert db is not None
        return db

    def _sql_begin(self) -> ObjectDatabase:
        """The database, with the current batch's transaction open."""
        db = self._sql_database()
        self._open_batch().sql = True
        db.begin()
        db.unsealed = True
        return db

    def _sql_failed(self, error: BaseException) -> None:
        """The database lost the open transaction: reset the object."""
        if self._broken is None:
            self._broken = error
            self._on_failure(error)

    # -- the alarm ------------------------------------------------------------------

    def _alarm_due(self) -> int | None:
        """The alarm as the object sees it, even while ``alarm()`` runs (for the scheduler)."""
        self._check_open()
        if not self._alarm_known:
            self._alarm = self._store.read_alarm()
            self._alarm_known = True
        return self._alarm

    def _alarm_value(self) -> int | None:
        value = self._alarm_due()
        if self._alarm_running and not self._alarm_touched:
            return None
        return value

    def _alarm_write(self, alarm_ms: int | None) -> None:
        self._check_open()
        self._alarm = alarm_ms
        self._alarm_known = True
        if self._alarm_running:
            self._alarm_touched = True
        self._open_batch().set_alarm(alarm_ms)

    def _alarm_started(self) -> None:
        """``alarm()`` starts: ``get_alarm`` answers ``None`` until it sets a new one."""
        self._alarm_running = True
        self._alarm_touched = False

    def _alarm_finished(self, *, succeeded: bool) -> None:
        """``alarm()`` returned (or raised): on success, the alarm is spent unless
        the handler set a new one; on failure it stays, for a retry."""
        touched = self._alarm_touched
        self._alarm_running = False
        self._alarm_touched = False
        if succeeded and not touched and self._broken is None:
            self._alarm_write(None)

    def _durable_alarm(self) -> int | None:
        """The alarm as of the last batch known to be durable."""
        return self._store.durable_alarm()

    # -- primitives ------------------------------------------------------------

    def _check_open(self) -> None:
        if self._broken is not None:
            raise ObjectReset(f"this object was reset and its storage closed: {self._broken}")

    def _lookup(self, key: str) -> _Entry:
        self._check_open()
        entry = self._cache.get(key)
        if entry is not None:
            return entry
        if self._complete:
            return _ABSENT
        found = self._store.read([key])
        entry = _ABSENT if key not in found else (found[key], _NOT_DECODED)
        self._cache[key] = entry
        return entry

    def _lookup_many(self, keys: list[str]) -> dict[str, _Entry]:
        self._check_open()
        cache = self._cache
        missing = [k for k in dict.fromkeys(keys) if k not in cache]
        if missing and not self._complete:
            found = self._store.read(missing)
            for k in missing:
                cache[k] = (found[k], _NOT_DECODED) if k in found else _ABSENT
        return {k: cache.get(k, _ABSENT) for k in keys}

    def _write(self, key: str, entry: _Entry) -> None:
        self._check_open()
        self._cache[key] = entry
        self._open_batch().writes[key] = entry[0]

    def _clear(self) -> None:
        self._check_open()
        if self._store.sql_capable:
            # A SQL object's delete_all() empties its database too, at once.
            self._sql_begin().drop_user_schema()
        self._cache.clear()
        self._complete = True
        batch = self._open_batch()
        batch.clear = True
        batch.writes.clear()

    def _range(self, query: ListQuery) -> list[tuple[str, bytes]]:
        self._check_open()
        if self._complete:
            return merge_range(query, self._cache, None)
        rows = merge_range(query, self._cache, self._store.read_range)
        if query.low is None and query.high is None and query.limit is None:
            # We just saw every key: keep them, and answer later misses from memory.
            for key, encoded in rows:
                self._cache.setdefault(key, (encoded, _NOT_DECODED))
            self._cache = {k: e for k, e in self._cache.items() if e[0] is not None}
            self._complete = True
        return rows

    # -- the commit pipeline (used by the runtime) -----------------------------

    def _open_batch(self) -> WriteBatch:
        """The open batch, made (and its seal scheduled) on the first write.

        Every event that writes before the next loop turn joins it, so their
        outputs share one commit (and the engine sees one batch, not many).
        """
        batch = self._batch
        if batch is None:
            batch = self._batch = WriteBatch()
            done = self._tail = CommitFuture(loop=self._loop)
            done.on_failure = self._failed
            self._store.seal_soon(self._seal)
        return batch

    def _seal(self) -> None:
        batch, self._batch = self._batch, None
        done = self._tail
        if batch is None or done is None:
            return
        if self._broken is not None:
            done.set_exception(self._broken)
            return
        try:
            # The store settles `done` in order with the object's earlier
            # batches, so it covers them too (see _output_barrier).
            self._store.commit(batch, done)
        except Exception as exc:
            done.set_exception(exc)

    def _failed(self, error: BaseException) -> None:
        if self._broken is None:
            self._broken = error
            self._on_failure(error)

    def _output_barrier(self) -> asyncio.Future[None] | None:
        """What a result must wait for: the commit of the latest batch (None: nothing).

        Batches of one object commit in order, so the latest covers all earlier
        writes.  The future cannot be cancelled by a waiter (it is shared).
        """
        tail = self._tail
        if tail is None or (tail.done() and tail.exception() is None):
            return None
        return tail

    @property
    def _has_pending_writes(self) -> bool:
        """True while some write of this object is not yet durable."""
        return self._tail is not None and not self._tail.done()

    def _close(self, reason: BaseException) -> None:
        """Refuse every later operation (the object was reset or evicted)."""
        if self._broken is None:
            self._broken = reason
        # Once broken, the callbacks are never called again; dropping them
        # breaks the cycles with the activation (through the latest batch's
        # future, too), which refcounting then frees at once.
        self._on_failure = _ignore_failure
        if self._tail is not None:
            self._tail.on_failure = None
        self._store.close()

    async def sync(self) -> None:
        """Wait until every write made so far is durable.

        A storage operation: no other event of this object starts meanwhile.
        """
        barrier = self._output_barrier()
        if barrier is None:
            return
        if self._gate is None:
            await barrier
            return
        self._gate.close()
        try:
            await barrier
        finally:
            self._gate.open()
