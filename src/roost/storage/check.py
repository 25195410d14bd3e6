"""``roost check``: SQLite's integrity check over every database of a data directory.

The shared database and every SQL object's file are opened as the server
would open them (so a WAL left by a crash is recovered, as the next start would
do; nothing is repaired or rewritten otherwise) and checked with ``PRAGMA
integrity_check`` (or the faster ``quick_check``, which skips comparing indexes
with their tables).  The data directory's lock is held meanwhile, so no server
can start on it half-way through and none may be running.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import apsw

from ..errors import StorageError
from . import datadir
from .sqlite import lock_data_dir

__all__ = ["CheckReport", "Problem", "check_data_dir"]

#: Problems reported per database; past that, SQLite's list would only repeat
#: what a damaged page already says.
_MAX_ERRORS: Final = 20


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a data directory."""

    #: The file concerned.
    path: Path
    #: What is wrong with it, in SQLite's words where they come from SQLite.
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(slots=True)
class CheckReport:
    """What :func:`check_data_dir` found."""

    #: Databases checked (the shared one and each SQL object's file).
    databases: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems

    def summary(self) -> str:
        """One line for the end of the report."""
        if self.clean:
            return f"ok: {self.databases} databases checked, no problems"
        return f"damaged: {len(self.problems)} problems in {self.databases} databases checked"


def check_data_dir(directory: str | Path, *, quick: bool = False) -> CheckReport:
    """Check every database of ``directory``; raise :class:`~roost.StorageError` if
    it is not a data directory or a server holds it."""
    directory = Path(directory)
    if not directory.is_dir():
        raise StorageError(f"{directory} is not a directory")
    fd = lock_data_dir(directory)
    try:
        return _check(directory, "quick_check" if quick else "integrity_check")
    finally:
        os.close(fd)


def _check(directory: Path, pragma: str) -> CheckReport:
    report = CheckReport()
    try:
        state = datadir.inspect(directory)
    except StorageError as exc:
        report.problems.append(Problem(directory / datadir.SHARED_DATABASE, str(exc)))
        return report
    shared = directory / datadir.SHARED_DATABASE
    if state.new:
        report.problems.append(Problem(shared, "no Roost data here (not a data directory?)"))
        return report
    for path in [shared, *_object_files(directory)]:
        report.databases += 1
        report.problems.extend(_check_file(path, pragma))
    return report


def _object_files(directory: Path) -> Iterator[Path]:
    root = directory / datadir.OBJECT_FILES
    if root.is_dir():
        yield from sorted(root.glob("*/*/*/*.sqlite3"))


def _check_file(path: Path, pragma: str) -> list[Problem]:
    if path.stat().st_size == 0:
        return [Problem(path, "the file is empty (0 bytes)")]
    try:
        # Not read-only: a read-only connection cannot recover a WAL left by a
        # crash, and would report an intact file as unreadable.
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE)
    except apsw.Error as exc:
        return [Problem(path, f"cannot open: {exc}")]
    try:
        rows = conn.execute(f"PRAGMA {pragma}({_MAX_ERRORS})").fetchall()
    except apsw.Error as exc:
        return [Problem(path, f"{pragma} failed: {exc}")]
    finally:
        conn.close()
    # SQLite gives a row per problem, but may also pack several into one row,
    # under a "*** in database main ***" heading.
    found = [
        line.strip()
        for row in rows
        for line in str(row[0]).splitlines()
        if line.strip() and not line.startswith("***")
    ]
    if found == ["ok"]:
        return []
    return [Problem(path, message) for message in found]
