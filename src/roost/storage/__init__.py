"""Storage: the per-object KV API and the engines that keep it durable.

``kv`` is what objects see; ``engine`` is the seam; ``sqlite`` (embedded,
durable) and ``memory`` (ephemeral) implement it.
"""

from .engine import Durability, ListQuery, ObjectStore, StorageEngine, WriteBatch
from .kv import Storage, StorageLimits, Transaction
from .memory import MemoryEngine
from .sqlite import SqliteEngine

__all__ = [
    "Durability",
    "ListQuery",
    "MemoryEngine",
    "ObjectStore",
    "SqliteEngine",
    "Storage",
    "StorageEngine",
    "StorageLimits",
    "Transaction",
    "WriteBatch",
]
