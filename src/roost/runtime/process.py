"""What a runtime sets or reads for its whole process: the garbage collector's
threshold and the open-files limit.

Kept apart from the runtime because they are not the runtime's own: another
runtime, or the application, may share them.
"""

from __future__ import annotations

import gc
import resource
from typing import Final

__all__ = ["GcThreshold", "sql_objects_for_open_files"]

#: CPython's default first-generation threshold (``gc.get_threshold()[0]``).
PYTHON_GC_THRESHOLD: Final = 700
#: Descriptors left for sockets, the shared database and everything else.
_RESERVED_FILES: Final = 256


class GcThreshold:
    """Raises the young-generation GC threshold while a runtime runs.

    The default (700 allocations) makes a busy server collect every few
    requests; a larger one costs little memory.  Applied only when the
    threshold is still Python's default (someone else's choice is kept), and
    restored only if nobody changed it meanwhile.
    """

    def __init__(self, threshold: int | None) -> None:
        if threshold is not None and (isinstance(threshold, bool) or threshold < 1):
            raise ValueError(f"gc_threshold must be a positive int or None, not {threshold!r}")
        self.threshold = threshold
        self._restore: tuple[int, int, int] | None = None

    def raise_(self) -> None:
        current = gc.get_threshold()
        if self.threshold is None or current[0] != PYTHON_GC_THRESHOLD:
            return
        self._restore = current
        gc.set_threshold(self.threshold, *current[1:])

    def restore(self) -> None:
        if self._restore is not None and gc.get_threshold()[0] == self.threshold:
            gc.set_threshold(*self._restore)
        self._restore = None


def sql_objects_for_open_files() -> int:
    """How many SQL objects may be live within the process's open-files limit.

    A live SQL object holds its database and its WAL open, and an evicted one
    holds them until its closing checkpoint is done (in a background thread),
    so each is counted four times.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1_000_000
    return max(16, (soft - _RESERVED_FILES) // 4)
