"""Roost's exceptions: one root, leaves named after the condition.

Every exception Roost raises derives from :class:`RoostError`.  Where the meaning
matches, a leaf also derives from the standard exception a Python developer would
catch (``ValueError``, ``TypeError``, ``LookupError``)::

    RoostError
    ├── InvalidObjectId (ValueError)        malformed ID, or an ID of another namespace
    ├── UnknownBinding (LookupError,        env.NAME with no such namespace or
    │   │               AttributeError)     configuration value
    │   └── UnknownNamespace                 a namespace name that is not bound
    ├── RpcMethodNotFound (AttributeError)  stub.method that is not a public async method
    ├── StorageError
    │   ├── StorageLimitExceeded (ValueError)   key, value, SQL row or database over
    │   │                                        the configured limit
    │   ├── SqlNotEnabled                        storage.sql on a class without sql=True
    │   ├── SqlTimeout                           a SQL query ran past its time limit
    │   ├── SqlError (ValueError)                a SQL statement failed: syntax, constraint,
    │   │   │                                    wrong parameters, ``one()`` on != 1 row
    │   │   └── SqlStatementRefused              a statement the contract forbids (BEGIN,
    │   │                                        ATTACH, unsafe PRAGMA, internal tables)
    │   └── CommitFailed                         a batch could not be made durable
    ├── ObjectReset                          the instance was dropped (failed commit,
    │                                        ctx.abort()); its held outputs fail
    ├── ObjectOverloaded                     the object's queue is full; retry later
    ├── CallTimeout (TimeoutError)           a call outlived call_timeout; its outcome
    │                                        is unknown
    ├── RuntimeClosed                        the runtime is shut down
    ├── InvalidState (RuntimeError)          use of something no longer usable (a
    │                                        finished transaction)
    ├── WebSocketError                       a WebSocket failed (``code``, ``reason``)
    │   └── WebSocketClosed                  use of a WebSocket that is already closed
    └── RemoteError                          mixed into every exception re-raised at a
                                             caller from an object's own code

Every Roost exception carries the three flags of Cloudflare's Durable Object errors:

``remote``
    True when the error was raised by the object's code (not by Roost itself).
``retryable``
    True when the failure was transient and the call may be retried (if idempotent).
``overloaded``
    True when the object refused the call because too many calls were queued.
"""

from __future__ import annotations

import builtins
import sys
from typing import Any

__all__ = [
    "CallTimeout",
    "CommitFailed",
    "InvalidObjectId",
    "InvalidState",
    "ObjectOverloaded",
    "ObjectReset",
    "RemoteError",
    "RoostError",
    "RpcMethodNotFound",
    "RuntimeClosed",
    "SqlError",
    "SqlNotEnabled",
    "SqlStatementRefused",
    "SqlTimeout",
    "StorageError",
    "StorageLimitExceeded",
    "UnknownBinding",
    "UnknownNamespace",
    "WebSocketClosed",
    "WebSocketError",
]


class RoostError(Exception):
    """Root of every exception Roost raises."""

    remote: bool = False
    retryable: bool = False
    overloaded: bool = False


class InvalidObjectId(RoostError, ValueError):
    """An object ID string is malformed or belongs to another namespace."""


class UnknownBinding(RoostError, LookupError, AttributeError):
    """``env`` has no binding (namespace or configuration value) of that name."""


class UnknownNamespace(UnknownBinding):
    """No namespace is bound under the requested name."""


class RpcMethodNotFound(RoostError, AttributeError):
    """The stub was asked for a method the object does not expose over RPC."""


class StorageError(RoostError):
    """A storage operation failed."""


class StorageLimitExceeded(StorageError, ValueError):
    """A key, value, SQL row or object database exceeds the configured storage
    limits (``StorageLimits``, ``SqlLimits``); nothing was written."""


class SqlNotEnabled(StorageError):
    """``storage.sql`` was used on a class declared without ``sql=True``."""


class SqlError(StorageError, ValueError):
    """A SQL statement failed; nothing it did remains (its batch goes on).

    Raised for syntax errors, constraint violations, wrong parameters and a
    ``one()`` that did not find exactly one row.
    """

    #: SQLite's name for the error, e.g. ``"SQLITE_CONSTRAINT_UNIQUE"`` (``None``
    #: when the error was found by Roost, not SQLite).
    sqlite_error: str | None = None

    def __init__(self, message: str, *, sqlite_error: str | None = None) -> None:
        super().__init__(message)
        self.sqlite_error = sqlite_error


class SqlStatementRefused(SqlError):
    """A statement the storage contract forbids; it was not run and changed nothing.

    Refused: transaction control by hand (``BEGIN``, ``COMMIT``, ``SAVEPOINT``;
    use ``transaction_sync``), ``ATTACH``/``DETACH``, PRAGMAs outside a read-only
    list, loading extensions, and any access to Roost's internal tables.
    """


class SqlTimeout(StorageError):
    """A ``storage.sql.exec()`` ran past ``SqlLimits.statement_timeout`` and was
    interrupted; nothing it did remains.

    The batch goes on, unless the query was writing and the open transaction
    held earlier SQL writes: SQLite then rolls all of it back, the object is
    reset, and those writes (none of them acknowledged) are gone.
    """


class CommitFailed(StorageError):
    """A batch of writes could not be made durable; the object was reset."""

    retryable = True


class ObjectReset(RoostError):
    """The object's instance was dropped while this call depended on it.

    Raised for calls whose results were held by the output gate when a commit
    failed, and for events of an instance that called ``ctx.abort()``.
    """

    retryable = True


class ObjectOverloaded(RoostError):
    """The object's event queue is full; the call was refused at once."""

    overloaded = True


class InvalidState(RoostError, RuntimeError):
    """An operation on something that is no longer usable, e.g. a finished transaction."""


class CallTimeout(RoostError, TimeoutError):
    """A call did not finish within the runtime's ``call_timeout``.

    Its outcome is unknown: the object may have run the call in part or in
    whole (its writes so far are kept, as for an event that raised), so retry
    only what is idempotent.
    """


class RuntimeClosed(RoostError):
    """The runtime has been closed and accepts no more events."""


class WebSocketError(RoostError):
    """A WebSocket failed: a protocol error, an oversized or invalid message.

    ``code`` and ``reason`` are the close code and reason the connection ended
    with (RFC 6455 §7.4), e.g. 1007 for invalid UTF-8 or 1009 for a message
    over the size limit.
    """

    def __init__(self, message: str, *, code: int = 1006, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class WebSocketClosed(WebSocketError):
    """The WebSocket is closed: nothing more can be sent or received on it."""


class RemoteError(RoostError):
    """Base mixed into every error re-raised at a caller from an object's code.

    The re-raised exception keeps the original type's name and message; when that
    type is a built-in exception, or an exception class already imported in this
    process, it is also an instance of that type (``except ValueError`` works).
    """

    remote = True
    #: Name of the original exception type, e.g. ``"ValueError"``.
    type_name: str = "Exception"
    #: Module of the original exception type, e.g. ``"builtins"``.
    type_module: str = "builtins"
    #: The traceback as formatted where the error was raised.
    remote_traceback: str = ""


_remote_classes: dict[tuple[str, str], type[RemoteError]] = {}


def _resolve_exception_class(module: str, name: str) -> type[BaseException] | None:
    # Only classes already loaded in this process: data from a remote peer must
    # never make us import a module.
    holder: Any = builtins if module == "builtins" else sys.modules.get(module)
    if holder is None:
        return None
    cls: Any = holder
    for part in name.split("."):
        cls = getattr(cls, part, None)
        if cls is None:
            return None
    if isinstance(cls, type) and issubclass(cls, Exception):
        return cls
    return None


def remote_error_class(module: str, name: str) -> type[RemoteError]:
    """Return the class used to re-raise an object's ``module.name`` exception."""
    key = (module, name)
    cls = _remote_classes.get(key)
    if cls is not None:
        return cls
    original = _resolve_exception_class(module, name)
    short = name.rsplit(".", 1)[-1]
    attrs = {"type_name": short, "type_module": module, "__module__": module}
    bases: tuple[type, ...] = (RemoteError,)
    if original is not None and not issubclass(original, RoostError):
        bases = (original, RemoteError)
    elif original is not None:
        bases = (original,) if issubclass(original, RemoteError) else (original, RemoteError)
    try:
        cls = type(short, bases, attrs)
    except TypeError:  # incompatible layouts: keep the name, lose the isinstance
        cls = type(short, (RemoteError,), attrs)
    _remote_classes[key] = cls
    return cls


def make_remote_error(
    module: str,
    name: str,
    args: tuple[Any, ...],
    *,
    retryable: bool = False,
    overloaded: bool = False,
) -> RemoteError:
    """Build the caller-side exception for an error raised inside an object.

    ``args`` are the original exception's arguments (or its message alone when
    they could not cross by value), so ``str(exc)`` reads as it did in the object.
    """
    cls = remote_error_class(module, name)
    exc = cls.__new__(cls)
    BaseException.__init__(exc, *args)
    exc.remote = True
    exc.retryable = retryable
    exc.overloaded = overloaded
    return exc
