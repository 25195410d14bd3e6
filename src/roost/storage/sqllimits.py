"""Limits on SQL objects: how long a query may run, how large a value and a database may be.

Every object runs on the one event loop, and SQLite runs a statement to its end
without yielding, so one runaway query (a recursive CTE with no end, a scan of
a huge join) would stall every object of the process.  Three bounds keep a
query from doing that, each set per runtime in :class:`SqlLimits`:

* a *time limit* per ``exec()``: SQLite calls a progress handler every
  :data:`PROGRESS_STEPS` virtual-machine steps, and the handler interrupts the
  statement once the deadline has passed;
* a *size limit on strings, BLOBs and rows* (SQLite's ``SQLITE_LIMIT_LENGTH``):
  writing one huge value is a single VM step that no progress handler can
  interrupt (``zeroblob(950000000)`` held the loop for seconds), so it must be
  refused before it starts;
* a *size limit on the database* (SQLite's ``max_page_count``).

Roost's own statements (KV writes, commits, checkpoints) are bounded by the KV
limits instead, so the length limit is lifted while they run
(:meth:`.objectdb.ObjectDatabase.apply`) and no deadline is set for them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Final

__all__ = ["PROGRESS_STEPS", "SqlLimits", "disk_is_full"]

#: VM steps between two calls of the progress handler.  A call costs a Python
#: function call and a clock read; at 1,000 steps the handler runs every few
#: tens of microseconds of a busy statement, which made no measurable
#: difference to a two-million-row CTE, and the deadline is met within that.
PROGRESS_STEPS: Final = 1000
#: SQLite's own ceiling for strings and BLOBs (``SQLITE_MAX_LENGTH``).
SQLITE_MAX_LENGTH: Final = 1_000_000_000
#: A write that failed for lack of space leaves less than this free: SQLite
#: writes at most its page cache (2 MiB per object) at a time.
_FULL_DISK_SLACK: Final = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SqlLimits:
    """Bounds on what the SQL of one object may do (``Runtime(sql_limits=...)``).

    Parameters
    ----------
    statement_timeout:
        Seconds one ``storage.sql.exec()`` call (all its statements) may run
        before it is interrupted with :class:`~roost.SqlTimeout`; ``None``: no
        limit.  Default 2 s: every object shares the event loop, so this is the
        longest one query can stall all others, and it is twice what one
        statement inserting a million rows takes (``docs/limits.md``).
    max_database_bytes:
        Size of one object's database past which writes fail with
        :class:`~roost.StorageLimitExceeded`.  Default 10 GB, Cloudflare's limit
        per SQLite-backed Durable Object.
    max_row_bytes:
        Longest string, BLOB or row a statement may make; longer ones fail
        with :class:`~roost.StorageLimitExceeded` before anything is written.
        Default 2 MB, Cloudflare's limit for Durable Objects' SQL.
    """

    statement_timeout: float | None = 2.0
    max_database_bytes: int = 10_000_000_000
    max_row_bytes: int = 2_000_000

    def __post_init__(self) -> None:
        timeout = self.statement_timeout
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0
        ):
            raise ValueError(f"statement_timeout must be positive seconds or None, not {timeout!r}")
        if not _positive_int(self.max_database_bytes) or self.max_database_bytes < 65536:
            raise ValueError(
                f"max_database_bytes must be an int of at least 65536, "
                f"not {self.max_database_bytes!r}"
            )
        if not _positive_int(self.max_row_bytes) or self.max_row_bytes > SQLITE_MAX_LENGTH:
            raise ValueError(
                f"max_row_bytes must be a positive int up to {SQLITE_MAX_LENGTH}, "
                f"not {self.max_row_bytes!r}"
            )

    def max_page_count(self, page_size: int) -> int:
        """The ``max_page_count`` that keeps a database of ``page_size`` pages in bounds."""
        return max(1, math.floor(self.max_database_bytes / page_size))

    @property
    def timeout_text(self) -> str:
        """The time limit as the errors show it, e.g. ``"2 s"``."""
        return f"{self.statement_timeout:g} s"


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def disk_is_full(path: str | None) -> bool:
    """Whether the file system holding ``path`` is (nearly) out of space.

    SQLite reports a database at its ``max_page_count`` and a full disk alike
    (``SQLITE_FULL``); a write refused by the disk leaves next to nothing free.
    ``None`` (an in-memory database) never is.
    """
    if path is None:
        return False
    try:
        stat = os.statvfs(os.path.dirname(path) or ".")
    except OSError:
        return True  # cannot tell: report the failure as the disk's, the graver one
    return stat.f_bavail * stat.f_frsize < _FULL_DISK_SLACK
