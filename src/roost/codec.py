"""The value codec: what may be stored, and what may cross a stub.

Values are encoded as CBOR (RFC 8949), a safe, language-neutral format, behind
one format-version byte.  Accepted types, and how they come back:

============================  =============================================
``None``, ``bool``            themselves
``int`` (any size)            ``int`` (bignums use CBOR tags 2/3)
``float``                     ``float``
``str``, ``bytes``            themselves
``list``, ``tuple``           ``list``, ``tuple`` (tuple: tag 38000)
``dict``                      ``dict`` (keys may be any accepted hashable)
``set``                       ``set`` (tag 258)
``datetime``                  aware: tag 0, same instant with a fixed offset;
                              naive: tag 38001, the same naive value
``Decimal``                   ``Decimal`` (tag 4)
``UUID``                      ``UUID`` (tag 37)
============================  =============================================

Anything else (class instances, ``frozenset``, ``bytearray``, ``date``, ``complex``,
functions, ...) is refused with a ``TypeError`` naming the type.  Nothing is
ever pickled.

Containers may nest :data:`MAX_NESTING` levels deep (``[[1]]`` is two levels).
A deeper value, or one that contains itself, is refused with a ``ValueError``
before any byte is encoded: the C encoder would overflow the stack on deep
values, and the decoder reads back only about 400 CBOR levels (a tuple or a
set takes two), so the bound keeps everything written readable.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

import cbor2

__all__ = [
    "FORMAT_VERSION",
    "MAX_NESTING",
    "copy_value",
    "decode",
    "encode",
    "is_immutable_scalar",
]

FORMAT_VERSION: Final = 1
#: How many levels of containers a value may nest (as serde_json allows).
MAX_NESTING: Final = 128
_PREFIX: Final = bytes([FORMAT_VERSION])
_TUPLE_TAG: Final = 38000
_NAIVE_DATETIME_TAG: Final = 38001

#: Types whose instances cannot be mutated, so they may be shared instead of copied.
_IMMUTABLE_SCALARS: Final = frozenset({type(None), bool, int, float, str, bytes})


def is_immutable_scalar(value: object) -> bool:
    """True when ``value`` can be handed across a stub without copying."""
    return type(value) in _IMMUTABLE_SCALARS


def _refuse(encoder: Any, value: Any) -> None:
    if isinstance(value, datetime):
        # A datetime subclass (freezegun's, pandas') that cbor2 matched as a date.
        _encode_datetime(encoder, datetime.fromisoformat(value.isoformat()))
        return
    raise TypeError(
        f"cannot store or send a value of type {type(value).__qualname__!r}: Roost accepts "
        "None, bool, int, float, str, bytes, list, tuple, dict, set, datetime, Decimal, "
        "UUID and nestings of these"
    )


_MAJOR_TAG: Final = 6


def _encode_tuple(encoder: Any, value: tuple[Any, ...]) -> None:
    encoder.encode_length(_MAJOR_TAG, _TUPLE_TAG)
    encoder.encode(list(value))


def _encode_datetime(encoder: Any, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        encoder.encode_length(_MAJOR_TAG, _NAIVE_DATETIME_TAG)
        encoder.encode(value.isoformat())
    else:
        encoder.encode_datetime(value)


def _native(name: str) -> Callable[[Any, Any], None]:
    def encode_native(encoder: Any, value: Any) -> None:
        getattr(encoder, name)(value)

    return encode_native


# cbor2 knows more types than Roost accepts (dates, fractions, regexes, IP
# addresses, ...).  Naming every accepted type and refusing the rest through
# `default` keeps the accepted set exactly the documented one.
_refused_natives: tuple[type, ...] = ()
try:  # pragma: no branch - the names below exist in every supported cbor2
    import datetime as _dt
    import fractions
    import ipaddress
    import re
    from email.message import Message

    _refused_natives = (
        frozenset,
        bytearray,
        memoryview,
        complex,
        _dt.date,
        fractions.Fraction,
        re.Pattern,
        Message,
        ipaddress.IPv4Address,
        ipaddress.IPv6Address,
        ipaddress.IPv4Network,
        ipaddress.IPv6Network,
        ipaddress.IPv4Interface,
        ipaddress.IPv6Interface,
        type(cbor2.undefined),
        cbor2.CBORTag,
        cbor2.CBORSimpleValue,
    )
except ImportError:  # pragma: no cover
    pass

_ENCODERS: Final[dict[type, Callable[[Any, Any], None]]] = {
    tuple: _encode_tuple,
    datetime: _encode_datetime,
    Decimal: _native("encode_decimal"),
    UUID: _native("encode_uuid"),
    **{t: _refuse for t in _refused_natives},
}


def _unexpected_tag(tag: Any, _immutable: bool) -> Any:
    raise ValueError(f"unknown CBOR tag {tag.tag} in a stored value")


# cbor2 6 calls a semantic decoder with the tag's content already decoded, and
# whether it must be immutable (inside a dict key or set).
_DECODERS: Final[dict[int, Callable[[Any, bool], Any]]] = {
    _TUPLE_TAG: lambda content, _immutable: tuple(content),
    _NAIVE_DATETIME_TAG: lambda content, _immutable: datetime.fromisoformat(content),
}


_CONTAINERS: Final = (list, tuple, dict, set)


def _check_nesting(value: Any, depth: int, active: set[int]) -> None:
    """Refuse ``value`` if it nests deeper than :data:`MAX_NESTING` or contains itself.

    ``active`` holds the containers on the current path: a cycle is caught when
    it closes, before a value shared this way could make the walk exponential.
    """
    if depth > MAX_NESTING:
        raise ValueError(f"cannot store or send a value nested more than {MAX_NESTING} levels deep")
    key = id(value)
    if key in active:
        raise ValueError("cannot store or send a value that contains itself")
    active.add(key)
    if isinstance(value, dict):
        for k, v in value.items():
            if type(k) not in _IMMUTABLE_SCALARS and isinstance(k, tuple):
                _check_nesting(k, depth + 1, active)
            if type(v) not in _IMMUTABLE_SCALARS and isinstance(v, _CONTAINERS):
                _check_nesting(v, depth + 1, active)
    else:
        for item in value:
            if type(item) not in _IMMUTABLE_SCALARS and isinstance(item, _CONTAINERS):
                _check_nesting(item, depth + 1, active)
    active.discard(key)


def encode(value: Any) -> bytes:
    """Encode ``value``.

    Raises:
        TypeError: naming the first unsupported type.
        ValueError: the value nests more than :data:`MAX_NESTING` levels deep,
            contains itself, or holds a string that is not valid Unicode.
    """
    try:
        if type(value) in _IMMUTABLE_SCALARS:
            # No custom encoder applies to these, and cbor2 without any gives
            # the same bytes at half the cost (most stored values are scalars).
            return _PREFIX + cbor2.dumps(value)
        if isinstance(value, _CONTAINERS):
            _check_nesting(value, 1, set())
        return _PREFIX + cbor2.dumps(value, encoders=_ENCODERS, default=_refuse)
    except cbor2.CBOREncodeError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, TypeError):
            raise TypeError(str(cause)) from None
        if isinstance(cause, RecursionError) or "cyclic" in str(exc) or "recursion" in str(exc):
            raise ValueError("cannot store a value that contains itself") from None
        raise TypeError(f"cannot encode value: {exc}") from None
    except UnicodeEncodeError as exc:
        # A lone surrogate (from surrogateescape, or a JSON escape) has no UTF-8 form.
        raise ValueError(
            f"cannot store or send a string that is not valid Unicode: {exc.reason} at "
            f"position {exc.start} of {_preview(exc.object)}"
        ) from None
    except RecursionError:
        raise ValueError("cannot store a value nested this deeply or containing itself") from None


def _preview(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def decode(data: bytes) -> Any:
    """Decode bytes made by :func:`encode`.

    Raises:
        ValueError: the bytes are not a value this codec wrote (an unknown
            format version, damaged bytes, or nesting beyond what it reads).
    """
    if not data or data[0] != FORMAT_VERSION:
        version = data[0] if data else None
        raise ValueError(f"unsupported stored value format version {version!r}")
    try:
        return cbor2.loads(data[1:], semantic_decoders=_DECODERS, tag_hook=_unexpected_tag)
    except cbor2.CBORDecodeError as exc:
        raise ValueError(f"cannot decode a stored value: {exc}") from None


def copy_value(value: Any) -> Any:
    """Return a deep copy of ``value`` as it would arrive across a stub."""
    if type(value) in _IMMUTABLE_SCALARS:
        return value
    return decode(encode(value))
