"""Storage: the per-object KV API and the engines that keep it durable.

``kv`` (and ``sql``, for SQL objects) is what objects see; ``engine`` is the
seam; ``sqlite`` (embedded, durable) and ``memory`` (ephemeral) implement it.
SQL objects' own databases: ``objectdb`` (connection and internal tables),
``sqlpolicy`` (what user SQL may do), ``sqlobject`` (their batches),
``objectfiles`` and ``filesync`` (SQL objects' files and their fsync),
``sqllimits`` (how long and how large their SQL may run);
``walsync``: the shared database's fsync and checkpoints.
"""

from .engine import AlarmEntry, Durability, ListQuery, ObjectStore, StorageEngine, WriteBatch
from .kv import Storage, StorageLimits, Transaction
from .memory import MemoryEngine
from .sql import SqlCursor, SqlStorage
from .sqlite import SqliteEngine
from .sqllimits import SqlLimits

__all__ = [
    "AlarmEntry",
    "Durability",
    "ListQuery",
    "MemoryEngine",
    "ObjectStore",
    "SqlCursor",
    "SqlLimits",
    "SqlStorage",
    "SqliteEngine",
    "Storage",
    "StorageEngine",
    "StorageLimits",
    "Transaction",
    "WriteBatch",
]
