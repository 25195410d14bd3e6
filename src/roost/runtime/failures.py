"""Failures as plain values: how an error on the object's side reaches its caller.

A router never hands the owner's exception object to the caller: it describes
the failure as a list of plain values (which the codec can encode, so a remote
router sends it as bytes) and the caller's side rebuilds an exception from
that description.  Two kinds:

* **raised**: the object's own code raised.  The caller gets a
  :class:`~roost.RemoteError` of the same type name and message, also an
  instance of the original class when that class is loaded in the caller's
  process, with the object-side traceback as a note.
* **refused**: the owner's runtime refused or lost the event
  (:class:`~roost.ObjectOverloaded`, :class:`~roost.ObjectReset`,
  :class:`~roost.RuntimeClosed`, a storage error, ...).  The caller gets a new
  error of the same Roost class (looked up by name among Roost's own), message
  and plain attributes, with the text of its cause as a note.
"""

from __future__ import annotations

import traceback
from typing import Any, Final

from .. import codec, errors
from ..errors import RemoteError, RoostError, make_remote_error

__all__ = ["Failure", "describe_raised", "describe_refused", "rebuild"]

#: [kind, ...fields]: a list, so the codec encodes it as it is.
Failure = list[Any]
_RAISED: Final = "raised"
_REFUSED: Final = "refused"

#: The Roost errors rebuilt by name; any other name becomes a plain RoostError.
_ROOST_ERRORS: Final[dict[str, type[RoostError]]] = {
    name: cls
    for name, cls in vars(errors).items()
    if isinstance(cls, type) and issubclass(cls, RoostError) and not issubclass(cls, RemoteError)
}
#: Attributes of an error that carry data (WebSocketError.code, SqlError.sqlite_error, ...).
_PLAIN: Final = (str, int, float, bool, type(None))


def describe_raised(error: BaseException, namespace: str) -> Failure:
    """An exception raised by the code of an object of ``namespace``."""
    cls = type(error)
    try:
        args = list(codec.copy_value(tuple(error.args)))
    except (TypeError, ValueError):
        args = [str(error)]
    return [
        _RAISED,
        cls.__module__,
        cls.__qualname__,
        args,
        bool(getattr(error, "retryable", False)),
        bool(getattr(error, "overloaded", False)),
        "".join(traceback.format_exception(error)),
        namespace,
    ]


def describe_refused(error: RoostError) -> Failure:
    """An error of the owner's runtime (not of the object's code)."""
    attributes = {k: v for k, v in vars(error).items() if isinstance(v, _PLAIN)}
    cause = error.__cause__
    cause_text = None if cause is None else f"{type(cause).__name__}: {cause}"
    return [_REFUSED, type(error).__name__, str(error), attributes, cause_text]


def rebuild(failure: Failure) -> RoostError:
    """The caller-side exception for a description made by ``describe_*``."""
    if failure[0] == _RAISED:
        _, module, name, args, retryable, overloaded, remote_traceback, namespace = failure
        remote = make_remote_error(
            module, name, tuple(args), retryable=retryable, overloaded=overloaded
        )
        remote.remote_traceback = remote_traceback
        # A note, not an attribute only: tracebacks printed by logging and pytest
        # show notes, so the object's side of the failure appears with the caller's.
        remote.add_note(
            f"Raised inside a {namespace} object, where the traceback was:\n"
            + remote_traceback.rstrip()
        )
        return remote
    _, name, message, attributes, cause_text = failure
    cls = _ROOST_ERRORS.get(name, RoostError)
    copy = cls.__new__(cls)
    Exception.__init__(copy, message)
    for key, value in attributes.items():
        if isinstance(key, str) and key.isidentifier() and not key.startswith("__"):
            setattr(copy, key, value)
    if cause_text is not None:
        # The cause (an OSError of a full disk, say) stays on the owner's side.
        copy.add_note(f"Caused on the object's side by {cause_text}")
    return copy
