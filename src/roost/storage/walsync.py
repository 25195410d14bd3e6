"""Durability of the shared database: an ``fsync`` thread and a checkpoint thread.

The engine commits on the event loop with ``synchronous=OFF`` (the commit only
reaches the operating system).  :class:`WalSyncer` then makes it durable: one
thread ``fsync``s the WAL file and resolves every commit made before that
``fsync`` started; it does nothing else, so it needs the interpreter lock only
to pick up work and to hand results back.  A second thread checkpoints the WAL
into the database file now and then, through its own connection with
``synchronous=FULL`` (SQLite then syncs the WAL before and the database after
the checkpoint, so no part of the WAL is reused before it is durable in the
database).  Checkpoints run apart from the ``fsync`` thread so that a
checkpoint's writes never delay a commit's release (but for the quiet pass below).

A checkpoint alone does not bound the WAL.  SQLite starts the WAL over (writes
from its beginning again) only when a write transaction begins after a
checkpoint copied *every* frame, and a checkpoint copies only the frames that
existed when it began.  Under steady load the event loop commits every few
milliseconds, so some commit always lands while the checkpoint runs: measured,
the WAL never restarted while load lasted, and grew by 12-14 MB a second under the
HTTP benchmark (and every append to fresh file space costs the kernel more than
an overwrite: block reservation, zeroing, a size change to sync).  So each round
ends with a short *quiet pass*: the thread asks the loop to hold its commits
(they queue, the loop keeps running), copies the few frames written since the
bulk pass, and lets the commits go; the next commit then starts the WAL over.
Measured under the HTTP benchmark, a quiet pass holds commits for 2 to 6 ms
(two ``fsync`` calls among them) once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import apsw

from ..errors import CommitFailed
from .engine import Outcome, resolve_outcomes

__all__ = ["WalSyncer"]

#: Seconds between checkpoints while writes keep coming.
CHECKPOINT_INTERVAL: Final = 1.0
#: Bulk passes repeat while the last one found more new frames than this, so
#: the quiet pass that follows (commits held) has little left to copy.
_QUIET_ENOUGH: Final = 256
#: A bound on bulk passes per round, for a writer faster than its checkpoints.
_MAX_BULK_PASSES: Final = 4
#: Longest wait for the loop to hold its commits before the quiet pass goes ahead
#: anyway (the loop is busy or stopping; the WAL then restarts a round later).
_HOLD_WAIT: Final = 1.0

log = logging.getLogger("roost.storage")


class WalSyncer:
    """Makes the commits of one WAL-mode database durable (see the module docstring).

    ``release_after_sync(outcomes)`` is called on the loop right after a
    ``COMMIT``; the outcomes are resolved once an ``fsync`` of the WAL that
    started after that commit has finished (with ``fsync=False``, at once).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        path: Path,
        checkpointer: apsw.Connection,
        *,
        fsync: bool,
        hold_commits: Callable[[bool], None],
        checkpoint_interval: float = CHECKPOINT_INTERVAL,
        on_synced: Callable[[float], None] | None = None,
    ) -> None:
        self._loop = loop
        #: Called in the thread with the seconds each ``fsync`` took (for metrics).
        self._on_synced = on_synced
        self._fsync = fsync
        self._wal = f"{path}-wal"
        self._wal_fd = os.open(self._wal, os.O_RDONLY | os.O_CREAT, 0o644)
        _sync_directory(path.parent)  # the WAL file's name must survive a crash too
        self._cond = threading.Condition()
        self._waiting: list[list[Outcome]] = []
        self._stopping = False
        self._failure: BaseException | None = None
        self._checkpoints = _Checkpointer(
            loop, checkpointer, self._wal, hold_commits, checkpoint_interval
        )
        self._thread = threading.Thread(target=self._main, name="roost-wal-sync", daemon=True)
        self._thread.start()
        #: How many ``fsync`` calls were made (for measurements).
        self.syncs = 0
        #: Called in the thread before each ``fsync``; tests block it to hold a
        #: commit in flight, or raise to fail it.
        self.sync_hook: Callable[[], None] | None = None

    def release_after_sync(self, outcomes: list[Outcome]) -> None:
        self._checkpoints.dirty.set()
        if not self._fsync:
            resolve_outcomes(outcomes)
            return
        with self._cond:
            self._waiting.append(outcomes)
            self._cond.notify()

    def close(self) -> None:
        """Sync and release everything waiting, checkpoint fully, stop the threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()
        self._checkpoints.close()
        os.close(self._wal_fd)

    def _main(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._stopping:
                    self._cond.wait()
                taken, self._waiting = self._waiting, []
                if not taken:
                    return  # stopping, and nothing left to release
            self._release(taken)

    def _release(self, taken: list[list[Outcome]]) -> None:
        error = self._failure
        if error is None:
            start = time.perf_counter()
            error = self._sync()
            if self._on_synced is not None:
                self._on_synced(time.perf_counter() - start)
        outcomes = [o for group in taken for o in group]
        if error is not None:
            outcomes = [(future, None, err or error) for future, _, err in outcomes]
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self._loop.call_soon_threadsafe(resolve_outcomes, outcomes)

    def _sync(self) -> BaseException | None:
        hook = self.sync_hook
        if hook is not None:
            try:
                hook()
            except Exception as exc:  # an injected failure fails this round only
                return CommitFailed(f"commit failed: {exc}")
        try:
            os.fsync(self._wal_fd)
        except OSError as exc:
            # The kernel may have dropped the pages it failed to write: no later
            # fsync can vouch for them, so this engine takes no more commits.
            log.critical("fsync of %s failed; refusing all further commits: %s", self._wal, exc)
            self._failure = CommitFailed(f"fsync of the database failed: {exc}")
            return self._failure
        self.syncs += 1
        return None


class _Checkpointer:
    """A thread that checkpoints the WAL at most once per interval, while it changes.

    ``hold_commits(True)`` and ``hold_commits(False)`` are called on the loop
    around each round's quiet pass (see the module docstring).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        conn: apsw.Connection,
        wal: str,
        hold_commits: Callable[[bool], None],
        interval: float,
    ) -> None:
        self._loop = loop
        self._conn = conn
        self._wal = wal
        self._hold_commits = hold_commits
        self._interval = interval
        self.dirty = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="roost-checkpoint", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self.dirty.set()
        self._thread.join()
        with contextlib.suppress(apsw.Error):
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._conn.close()

    def _main(self) -> None:
        while not self._stop.is_set():
            self.dirty.wait()
            if self._stop.wait(self._interval):
                return
            self.dirty.clear()
            try:
                self._round()
            except apsw.Error as exc:  # retried after the next interval
                log.warning("checkpoint of %s failed: %s", self._wal, exc)

    def _round(self) -> None:
        copied = frames = 0
        for _ in range(_MAX_BULK_PASSES):
            frames = self._passive()
            if frames - copied <= _QUIET_ENOUGH:
                break
            copied = frames
        if frames:
            self._quiet_pass()

    def _passive(self) -> int:
        """One PASSIVE checkpoint; returns the WAL's length in frames as it saw it."""
        # The PRAGMA, not Connection.wal_checkpoint: it reports a busy lock in
        # its row rather than raising.
        row = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert row is not None  # the PRAGMA always answers one row
        return int(row[1])

    def _quiet_pass(self) -> None:
        held = threading.Event()

        def hold() -> None:
            self._hold_commits(True)
            held.set()

        try:
            self._loop.call_soon_threadsafe(hold)
        except RuntimeError:  # the loop is closed: nothing commits any more
            return
        try:
            # Callbacks run in order, so a late hold is still released below.
            held.wait(_HOLD_WAIT)
            self._passive()
        finally:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._hold_commits, False)


def _sync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
