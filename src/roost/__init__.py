"""Roost: durable objects for Python.

Layers, each using only the public interface of the one below::

    server / cli  ->  runtime (kernel: activations, gates, eviction, alarms)  ->  storage
                      stubs -> router (local now, remote later)

``roost.testing`` (fixtures and helpers for users' tests) sits on top of the
runtime's public API.  The public API is re-exported here; modules whose names start with ``_`` and
names not listed in ``__all__`` are internal.
"""

from .errors import (
    CallTimeout,
    CommitFailed,
    InvalidObjectId,
    InvalidState,
    ObjectOverloaded,
    ObjectReset,
    RemoteError,
    RoostError,
    RpcMethodNotFound,
    RuntimeClosed,
    SqlError,
    SqlNotEnabled,
    SqlStatementRefused,
    SqlTimeout,
    StorageError,
    StorageLimitExceeded,
    UnknownBinding,
    UnknownNamespace,
    WebSocketClosed,
    WebSocketError,
)
from .http import Request, Response
from .ids import ObjectId
from .object import DurableObject, ObjectState
from .runtime import AlarmInfo, Env, Namespace, Runtime, RuntimeStatistics, Stub, WebSocket
from .server import App
from .storage import SqlCursor, SqlLimits, SqlStorage, Storage, StorageLimits, Transaction

__version__ = "0.1.0"

__all__ = [
    "AlarmInfo",
    "App",
    "CallTimeout",
    "CommitFailed",
    "DurableObject",
    "Env",
    "InvalidObjectId",
    "InvalidState",
    "Namespace",
    "ObjectId",
    "ObjectOverloaded",
    "ObjectReset",
    "ObjectState",
    "RemoteError",
    "Request",
    "Response",
    "RoostError",
    "RpcMethodNotFound",
    "Runtime",
    "RuntimeClosed",
    "RuntimeStatistics",
    "SqlCursor",
    "SqlError",
    "SqlLimits",
    "SqlNotEnabled",
    "SqlStatementRefused",
    "SqlTimeout",
    "SqlStorage",
    "Storage",
    "StorageError",
    "StorageLimitExceeded",
    "StorageLimits",
    "Stub",
    "Transaction",
    "UnknownBinding",
    "UnknownNamespace",
    "WebSocket",
    "WebSocketClosed",
    "WebSocketError",
    "__version__",
]
