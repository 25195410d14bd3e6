"""The admin page's "recent errors": the last error records of Roost's loggers, kept in memory."""

from __future__ import annotations

import logging
import threading
import traceback
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Final

__all__ = ["DEFAULT_CAPACITY", "ErrorRecord", "RecentErrors"]

#: How many records are kept by default; older ones are dropped.
DEFAULT_CAPACITY: Final = 200
#: Longest message or traceback kept per record (characters): a huge repr in a
#: log message must not make the buffer hold megabytes.
MAX_TEXT: Final = 8000


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """One logged error, as the page shows it (plain text: the page escapes it)."""

    time: float
    level: str
    logger: str
    message: str
    traceback: str | None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class RecentErrors(logging.Handler):
    """A bounded ring buffer of ``ERROR`` and worse records of the ``roost.*`` loggers.

    :meth:`attach` installs it on the ``roost`` logger and :meth:`detach`
    removes it.  Records come from any thread (the storage threads log too),
    so the buffer is guarded by the handler's own lock.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY, *, logger: str = "roost") -> None:
        super().__init__(level=logging.ERROR)
        self._records: deque[ErrorRecord] = deque(maxlen=capacity)
        self._logger = logging.getLogger(logger)
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = f"{record.msg!r} % {record.args!r}"
        trace = None
        if record.exc_info and record.exc_info[1] is not None:
            trace = "".join(traceback.format_exception(*record.exc_info))[-MAX_TEXT:]
        entry = ErrorRecord(
            time=record.created,
            level=record.levelname,
            logger=record.name,
            message=message[:MAX_TEXT],
            traceback=trace,
        )
        with self._guard:
            self._records.append(entry)

    def records(self) -> list[ErrorRecord]:
        """The kept records, newest first."""
        with self._guard:
            return list(reversed(self._records))

    def attach(self) -> None:
        """Start keeping the records of the logger (idempotent)."""
        if self not in self._logger.handlers:
            self._logger.addHandler(self)

    def detach(self) -> None:
        """Stop keeping records."""
        self._logger.removeHandler(self)
