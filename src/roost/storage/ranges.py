"""Key ranges for ``storage.list()``: options to bounds, and newer writes laid over older rows."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .engine import ListQuery

__all__ = ["Entry", "make_query", "merge_range"]

#: A cache entry: the encoded value (``None``: known to be absent) and, for
#: immutable values, the decoded value to hand out without decoding again.
Entry = tuple[bytes | None, Any]


def _prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with ``prefix``."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if 0xD800 <= code <= 0xDFFF:
            code = 0xE000
        if code <= 0x10FFFF:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


def make_query(
    start: str | None,
    start_after: str | None,
    end: str | None,
    prefix: str | None,
    reverse: bool,
    limit: int | None,
) -> ListQuery:
    for name, value in (
        ("start", start),
        ("start_after", start_after),
        ("end", end),
        ("prefix", prefix),
    ):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"list({name}=...) takes a str, not {type(value).__name__}")
    if start is not None and start_after is not None:
        raise ValueError("list() takes start or start_after, not both")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ValueError(f"list(limit=...) must be a positive int, not {limit!r}")
    low, low_open = (start_after, True) if start_after is not None else (start, False)
    high = end
    if prefix:
        if low is None or low < prefix:
            low, low_open = prefix, False
        upper = _prefix_end(prefix)
        if upper is not None and (high is None or upper < high):
            high = upper
    return ListQuery(low=low, low_open=low_open, high=high, reverse=reverse, limit=limit)


def merge_range(
    query: ListQuery,
    overlay: Mapping[str, Entry],
    base: Callable[[ListQuery], list[tuple[str, bytes]]] | None,
) -> list[tuple[str, bytes]]:
    """Rows of ``query``: ``overlay`` (newer) laid over ``base`` (older, or none)."""
    mine = {k: e for k, e in overlay.items() if query.contains(k)}
    merged: dict[str, bytes] = {}
    if base is not None:
        limit = query.limit
        if limit is not None:
            # Each known-deleted key can hide one base row; ask for that many more.
            limit += sum(1 for e in mine.values() if e[0] is None)
        merged.update(base(ListQuery(query.low, query.low_open, query.high, query.reverse, limit)))
    for key, (encoded, _) in mine.items():
        if encoded is None:
            merged.pop(key, None)
        else:
            merged[key] = encoded
    keys = sorted(merged, reverse=query.reverse)
    if query.limit is not None:
        keys = keys[: query.limit]
    return [(k, merged[k]) for k in keys]
