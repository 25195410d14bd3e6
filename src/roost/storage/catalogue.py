"""The object catalogue: what storage records about each object, for listing.

Every engine keeps one *catalogue entry* per object that holds data: its
namespace, ID, the name it was made from (for IDs made with ``id_from_name``;
the name cannot be derived from the ID), when it was first and last written,
and whether it is a SQL object.  The entry is written by the engine inside the
commits of the object's own batches, so listing never needs to scan the
objects' data; :mod:`roost.admin` reads it through the
:class:`~roost.storage.engine.StorageEngine` methods.

Key counts and sizes are *not* kept in the entry: a batch does not say whether
a put adds a key or replaces one, nor how long the value it replaces was, and
finding out would cost a read per written key.  They are counted when asked
(:class:`ObjectUsage`), from the object's own keys.

The last-written time of a live object is recorded at most once per
:data:`WRITTEN_RESOLUTION_MS` (and at its first write after each activation),
so a busy object costs one catalogue write per interval, not one per batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from .objectdb import internal
from .sqlpolicy import INTERNAL_PREFIX

if TYPE_CHECKING:
    from .objectdb import ObjectDatabase

__all__ = [
    "WRITTEN_RESOLUTION_MS",
    "CatalogueEntry",
    "ObjectUsage",
    "kv_count",
    "prefix_bound",
    "sql_namespaces",
    "storable_name",
    "table_counts",
]

#: How stale a live object's recorded last-written time may be (ms).
WRITTEN_RESOLUTION_MS: Final = 10_000


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    """One object as the catalogue records it."""

    namespace: str
    #: The object's ID (64 hex characters).
    object_id: str
    #: The name the ID was made from, when known (``None`` for unique IDs and
    #: for objects last written before the catalogue existed).
    name: str | None
    #: First write (epoch ms); ``None`` for objects written before the catalogue.
    created_ms: int | None
    #: Last write (epoch ms, within :data:`WRITTEN_RESOLUTION_MS` for a live
    #: object); ``None`` for objects not written since the catalogue began.
    written_ms: int | None
    #: True for an object of a SQL class (its data is in a database of its own).
    sql: bool


@dataclass(frozen=True, slots=True)
class ObjectUsage:
    """What one object stores, counted when asked."""

    #: KV keys (``None`` for a SQL object with a database: its keys are in it,
    #: and it is not opened to count them).
    keys: int | None
    #: Approximate bytes: keys and encoded values for a KV object; the size of
    #: the database file (and its WAL) for a SQL object.
    bytes: int


def storable_name(name: str | None) -> str | None:
    """``name`` if it can be stored as text, else ``None``.

    ``id_from_name`` accepts lone surrogates (it encodes with
    ``surrogatepass``); such a name is not valid UTF-8, and writing it would
    fail the whole commit.  It is left unrecorded instead.
    """
    if name is None:
        return None
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return name


def prefix_bound(prefix: str) -> str | None:
    """The least string greater than every string that starts with ``prefix``
    (``None``: there is none), in code-point order (which is UTF-8's byte order,
    SQLite's ``BINARY`` collation)."""
    chars = list(prefix)
    while chars:
        last = ord(chars.pop()) + 1
        if 0xD800 <= last <= 0xDFFF:
            last = 0xE000  # surrogates are not characters a name can hold
        if last <= 0x10FFFF:
            return "".join(chars) + chr(last)
    return None


_TABLES: Final = internal(
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
)


def table_counts(db: ObjectDatabase) -> list[tuple[str, int]]:
    """A SQL object's own tables (Roost's left out) and their rows, by name.

    Each count reads its whole table: this is for inspection, not the hot path.
    """
    with db.trusted() as conn:
        names = [
            str(row[0])
            for row in conn.execute(_TABLES).fetchall()
            if not str(row[0]).lower().startswith(INTERNAL_PREFIX)
        ]
        counts: list[tuple[str, int]] = []
        for name in names:
            quoted = '"' + name.replace('"', '""') + '"'
            counts.append(
                (name, int(conn.execute(internal(f"SELECT count(*) FROM {quoted}")).fetchone()[0]))
            )
        return counts


def kv_count(db: ObjectDatabase) -> int:
    """The KV keys a SQL object keeps in its own database."""
    with db.trusted() as conn:
        return int(conn.execute(internal("SELECT count(*) FROM _roost_kv")).fetchone()[0])


def sql_namespaces(root: Path) -> list[str]:
    """The namespaces with a directory of SQL objects' files under ``root``
    (the inverse of ``ObjectFiles.namespace_dir``)."""
    if not root.is_dir():
        return []
    found: list[str] = []
    for entry in sorted(root.iterdir()):
        if not entry.is_dir():
            continue
        name = entry.name
        if name.startswith("x-"):
            try:
                name = bytes.fromhex(name[2:]).decode()
            except ValueError:
                continue
        found.append(name)
    return found
