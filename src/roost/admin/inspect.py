"""Listing and inspecting stored objects, for scripts, tests and ``roost objects``.

Everything here reads through the storage seam (the catalogue methods of
:class:`~roost.storage.engine.StorageEngine`, and :meth:`StorageEngine.open_object`
for an object's keys), never through an engine's files, so it works on any
engine: the SQLite one, the in-memory one, a later cluster's.

Each function takes a *source*: a started :class:`roost.Runtime` (then an object
live in it is known to be live, and :func:`delete_object` refuses it), or a
started storage engine with no runtime on it (a data directory opened by a tool;
nothing is live there).

Listing pages by keyset: :func:`list_objects` returns at most ``limit`` objects
and a cursor (:attr:`ObjectPage.next_after`) to pass back as ``after``; each
page reads only its own rows, however many objects the namespace holds.  Key
counts and sizes are counted for the objects of the page when it is read (the
catalogue does not keep them; see :mod:`roost.storage.catalogue`).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final
from uuid import UUID

from .. import codec
from ..errors import InvalidObjectId, RoostError, StorageError
from ..ids import IdFactory, ObjectId
from ..storage import idsecret
from ..storage.catalogue import CatalogueEntry
from ..storage.engine import ListQuery, StorageEngine

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = [
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectPage",
    "ObjectView",
    "TableInfo",
    "delete_object",
    "list_objects",
    "render_value",
    "show_object",
    "value_to_json",
]

#: The most objects one page may ask for.
MAX_PAGE: Final = 10_000
#: KV pairs :func:`show_object` returns by default.
DEFAULT_MAX_ENTRIES: Final = 1000


class ObjectNotFound(RoostError, LookupError):
    """No object with that ID (or name) stores anything."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One stored object, as listed."""

    namespace: str
    #: The object's ID (64 hex characters; ``id_from_string`` accepts it).
    object_id: str
    #: The name its ID was made from (``id_from_name``), when storage knows it.
    name: str | None
    #: First write, when known (``None``: written before the catalogue existed).
    created: datetime | None
    #: Last write, within ten seconds for a live object (``None``: unknown).
    written: datetime | None
    #: True for an object of a SQL class.
    sql: bool
    #: KV keys it holds (``None``: not counted: a SQL object's keys are in its
    #: own database, counted only by :func:`show_object` when it is not live).
    keys: int | None
    #: Approximate bytes: keys and encoded values of a KV object; the size of
    #: a SQL object's database file and its WAL.
    bytes: int
    #: True when the object has an instance in the runtime given as the source.
    live: bool = False

    def to_json(self) -> dict[str, Any]:
        """The info as plain JSON values (times as ISO 8601 strings)."""
        return {
            "namespace": self.namespace,
            "id": self.object_id,
            "name": self.name,
            "created": None if self.created is None else self.created.isoformat(),
            "written": None if self.written is None else self.written.isoformat(),
            "sql": self.sql,
            "keys": self.keys,
            "bytes": self.bytes,
            "live": self.live,
        }


@dataclass(frozen=True, slots=True)
class ObjectPage:
    """One page of :func:`list_objects`."""

    objects: list[ObjectInfo]
    #: Pass as ``after=`` for the next page; ``None`` when this page is the last.
    next_after: str | None


@dataclass(frozen=True, slots=True)
class TableInfo:
    """A user table of a SQL object."""

    name: str
    rows: int


@dataclass(frozen=True, slots=True)
class ObjectView:
    """Everything :func:`show_object` read of one object."""

    info: ObjectInfo
    #: ``(key, value)`` in key order, values decoded (a value the codec cannot
    #: read is left as its stored ``bytes``).
    entries: list[tuple[str, Any]]
    #: True when the object holds more keys than were read.
    more_entries: bool
    #: The SQL object's tables and row counts; ``None`` for a KV object, or
    #: when they could not be read (:attr:`tables_note` says why).
    tables: list[TableInfo] | None
    tables_note: str | None
    #: The alarm (UTC), if one is set, and its failed deliveries so far.
    alarm: datetime | None
    alarm_retries: int = 0
    #: Keys whose stored value the codec could not decode.
    undecodable: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The view as JSON values (stored values through :func:`value_to_json`)."""
        return {
            **self.info.to_json(),
            "entries": [{"key": k, "value": value_to_json(v)} for k, v in self.entries],
            "more_entries": self.more_entries,
            "undecodable": self.undecodable,
            "tables": None
            if self.tables is None
            else [{"name": t.name, "rows": t.rows} for t in self.tables],
            "tables_note": self.tables_note,
            "alarm": None if self.alarm is None else self.alarm.isoformat(),
            "alarm_retries": self.alarm_retries,
        }


# -- the source ------------------------------------------------------------------


def _engine_of(source: Runtime | StorageEngine) -> tuple[StorageEngine, Runtime | None]:
    if isinstance(source, StorageEngine):
        return source, None
    return source.engine, source


def _is_live(runtime: Runtime | None, namespace: str, object_id: str) -> bool:
    return runtime is not None and runtime.is_live(namespace, ObjectId(object_id, namespace))


def _when(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def _info(engine: StorageEngine, runtime: Runtime | None, entry: CatalogueEntry) -> ObjectInfo:
    live = _is_live(runtime, entry.namespace, entry.object_id)
    if entry.sql and live:
        # Its database is held by its live instance: only the file size is read.
        usage = engine.object_usage(entry.namespace, entry.object_id, sql=True)
        keys = None
    else:
        usage = engine.object_usage(entry.namespace, entry.object_id, sql=entry.sql)
        keys = usage.keys
    return ObjectInfo(
        entry.namespace,
        entry.object_id,
        entry.name,
        _when(entry.created_ms),
        _when(entry.written_ms),
        entry.sql,
        keys,
        usage.bytes,
        live,
    )


# -- listing ---------------------------------------------------------------------


def list_objects(
    source: Runtime | StorageEngine,
    namespace: str,
    *,
    prefix: str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> ObjectPage:
    """One page of the objects of ``namespace`` that store something.

    In ID order; with ``prefix``, only objects whose name (``id_from_name``)
    starts with it, in name order (objects whose name storage does not know
    are left out).  ``after`` is the :attr:`ObjectPage.next_after` of the page
    before (an opaque string; it is only valid with the same ``prefix``).
    Reads ``limit`` (at most :data:`MAX_PAGE`) rows of the catalogue plus each
    listed object's keys for its counts.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}, not {limit!r}")
    engine, runtime = _engine_of(source)
    after_id, after_name = _parse_cursor(after, named=prefix is not None)
    # One more row than asked tells whether a next page exists.
    entries = engine.catalogue_page(
        namespace, prefix=prefix, after_id=after_id, after_name=after_name, limit=limit + 1
    )
    more = len(entries) > limit
    entries = entries[:limit]
    objects = [_info(engine, runtime, entry) for entry in entries]
    cursor = None
    if more and entries:
        last = entries[-1]
        cursor = last.object_id if prefix is None else f"{last.object_id}:{last.name}"
    return ObjectPage(objects, cursor)


def _parse_cursor(after: str | None, *, named: bool) -> tuple[str | None, str | None]:
    if after is None:
        return None, None
    object_id, sep, name = after.partition(":")
    valid = len(object_id) == 64 and all(c in "0123456789abcdef" for c in object_id)
    if not valid or (named and not sep) or (not named and sep):
        raise ValueError(
            f"after={after[:80]!r} is not a cursor of this listing (pass the next_after of "
            "a page listed with the same prefix)"
        )
    return object_id, (name if named else None)


# -- one object ------------------------------------------------------------------


def _resolve_id(
    source: Runtime | StorageEngine,
    engine: StorageEngine,
    namespace: str,
    object_id: str | ObjectId | None,
    name: str | None,
    id_secret: bytes | None,
) -> str:
    if (object_id is None) == (name is None):
        raise TypeError("give the object's ID or its name (name=), not both")
    if isinstance(object_id, ObjectId):
        return object_id.hex
    if object_id is not None:
        text = object_id.strip().lower()
        if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
            raise InvalidObjectId(f"{object_id!r} is not an object ID (64 hex characters)")
        return text
    assert name is not None
    if not isinstance(source, StorageEngine):
        return source.env[namespace].id_from_name(name).hex  # type: ignore[no-any-return]
    if id_secret is None:
        given = os.environ.get(idsecret.ENV_VAR)
        id_secret = idsecret.check_secret(given, idsecret.ENV_VAR) if given else None
    secret = engine.id_secret(id_secret)
    return IdFactory(namespace, secret=secret).from_name(name).hex


def show_object(
    source: Runtime | StorageEngine,
    namespace: str,
    object_id: str | ObjectId | None = None,
    *,
    name: str | None = None,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    id_secret: bytes | None = None,
) -> ObjectView:
    """What one object stores: its info, KV pairs, SQL tables and alarm.

    Give its ID (hex or :class:`roost.ObjectId`) or the ``name`` it was made
    from; with an engine as the source, a name is turned into an ID with the
    storage's ID secret (``id_secret``, else ``ROOST_ID_SECRET``, else the one
    the data directory keeps).  Reads the committed state, through the engine:
    writes of a live object not yet committed are not seen.  At most
    ``max_entries`` pairs are read.  The tables of a live SQL object are not
    read (its instance holds its database); :attr:`ObjectView.tables_note`
    says so.  Raises :class:`ObjectNotFound` when the object stores nothing.
    """
    engine, runtime = _engine_of(source)
    hex_id = _resolve_id(source, engine, namespace, object_id, name, id_secret)
    entry = engine.catalogue_entry(namespace, hex_id)
    live = _is_live(runtime, namespace, hex_id)
    sql = entry.sql if entry is not None else _sql_class(runtime, namespace)
    store = engine.open_object(namespace, hex_id, sql=sql) if not (sql and live) else None
    pairs: list[tuple[str, bytes]] = []
    alarm_ms: int | None = None
    tables: list[TableInfo] | None = None
    note: str | None = None
    if store is not None:
        try:
            pairs = store.read_range(ListQuery(limit=max_entries + 1))
            alarm_ms = store.read_alarm()
        except StorageError as exc:
            if not sql:
                raise
            note = f"not read: {exc}"  # its database cannot be opened from here
        finally:
            store.close()  # before sql_tables: one connection to a database at a time
    if sql and note is None:
        if live:
            note = "not read: the object is live, and its instance holds its database"
        else:
            try:
                counted = engine.sql_tables(namespace, hex_id)
            except StorageError as exc:
                note = f"not read: {exc}"
            else:
                tables = [TableInfo(t, n) for t, n in counted or []]
    index = engine.alarm_entry(namespace, hex_id)
    if alarm_ms is None and index is not None and not index.sql:
        alarm_ms = index.due_ms
    if entry is None and not pairs and alarm_ms is None and not tables:
        raise ObjectNotFound(f"no object {hex_id} stores anything in namespace {namespace!r}")
    if entry is None:  # written before the catalogue, and not since: unknown times
        entry = CatalogueEntry(namespace, hex_id, name, None, None, sql)
    elif entry.name is None and name is not None:
        entry = CatalogueEntry(
            namespace, hex_id, name, entry.created_ms, entry.written_ms, entry.sql
        )
    info = _info(engine, runtime, entry)
    if info.keys is None and store is not None and len(pairs) <= max_entries:
        info = dataclasses.replace(info, keys=len(pairs))  # a SQL object's keys, all read
    entries: list[tuple[str, Any]] = []
    undecodable: list[str] = []
    for key, raw in pairs[:max_entries]:
        try:
            entries.append((key, codec.decode(raw)))
        except Exception:  # stored by a newer Roost, or damaged: show the bytes
            entries.append((key, bytes(raw)))
            undecodable.append(key)
    return ObjectView(
        info,
        entries,
        len(pairs) > max_entries,
        tables,
        note,
        _when(alarm_ms),
        index.retry_count if index is not None else 0,
        undecodable,
    )


def _sql_class(runtime: Runtime | None, namespace: str) -> bool:
    if runtime is None:
        return False
    cls = runtime.classes.get(namespace)
    return bool(cls is not None and cls.sql_enabled)


async def delete_object(
    source: Runtime | StorageEngine,
    namespace: str,
    object_id: str | ObjectId | None = None,
    *,
    name: str | None = None,
    id_secret: bytes | None = None,
) -> bool:
    """Delete everything one object stores: its keys, SQL database, alarm and
    catalogue entry.  Returns whether it stored anything.

    With a runtime as the source, an object live in it is refused with
    :class:`roost.InvalidState` (checked at the moment of the deletion, when no
    event runs); wait for it to be evicted (``idle_timeout``) and try again.
    The next call to the object finds it empty.  With an engine, the caller
    makes sure no runtime uses it (``roost objects`` holds the data
    directory's lock).
    """
    engine, runtime = _engine_of(source)
    hex_id = _resolve_id(source, engine, namespace, object_id, name, id_secret)

    def refuse() -> str | None:
        if _is_live(runtime, namespace, hex_id):
            return (
                f"object {hex_id} of {namespace!r} is live: it can be deleted once it is "
                "evicted (idle_timeout)"
            )
        return None

    return await engine.delete_object(namespace, hex_id, refuse=refuse)


# -- values ------------------------------------------------------------------------

#: Bytes shown in full as hex up to this length; longer ones are cut.
_HEX_SHOWN: Final = 64
#: Strings longer than this are cut in :func:`render_value`.
_TEXT_SHOWN: Final = 200


def render_value(value: Any, *, limit: int = _TEXT_SHOWN) -> str:
    """A stored value as one readable line (long strings and bytes are cut).

    Python-like: ``'text'``, ``42``, ``[1, 2]``, ``{'a': 1}``; bytes as
    ``bytes(5) 68656c6c6f``; datetimes as ISO 8601.
    """
    if isinstance(value, bytes):
        shown = value[:_HEX_SHOWN].hex()
        cut = "…" if len(value) > _HEX_SHOWN else ""
        return f"bytes({len(value)}) {shown}{cut}"
    if isinstance(value, str):
        text = repr(value if len(value) <= limit else value[:limit])
        return text + ("…" if len(value) > limit else "")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (Decimal, UUID)):
        return f"{type(value).__name__}('{value}')"
    if isinstance(value, list):
        return "[" + ", ".join(render_value(v, limit=limit) for v in value) + "]"
    if isinstance(value, tuple):
        inner = ", ".join(render_value(v, limit=limit) for v in value)
        return f"({inner}{',' if len(value) == 1 else ''})"
    if isinstance(value, (set, frozenset)):
        if not value:
            return "set()"
        return "{" + ", ".join(sorted(render_value(v, limit=limit) for v in value)) + "}"
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(
                f"{render_value(k, limit=limit)}: {render_value(v, limit=limit)}"
                for k, v in value.items()
            )
            + "}"
        )
    return repr(value)


def value_to_json(value: Any) -> Any:
    """A stored value as JSON values, losing nothing.

    ``None``, booleans, ints, finite floats, strings and lists are themselves;
    the rest are tagged one-key objects: ``{"$bytes": base64}``,
    ``{"$float": "nan"}``, ``{"$datetime": iso}``, ``{"$decimal": text}``,
    ``{"$uuid": text}``, ``{"$tuple": [...]}``, ``{"$set": [...]}``, and a dict
    whose keys are not all strings (or include one starting with ``$``) as
    ``{"$map": [[key, value], ...]}``.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, UUID):
        return {"$uuid": str(value)}
    if isinstance(value, list):
        return [value_to_json(v) for v in value]
    if isinstance(value, tuple):
        return {"$tuple": [value_to_json(v) for v in value]}
    if isinstance(value, (set, frozenset)):
        items = [value_to_json(v) for v in value]
        return {"$set": sorted(items, key=lambda v: json.dumps(v, sort_keys=True))}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: value_to_json(v) for k, v in value.items()}
        return {"$map": [[value_to_json(k), value_to_json(v)] for k, v in value.items()]}
    return {"$repr": repr(value)}
