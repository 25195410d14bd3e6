"""Making SQL objects' commits durable without blocking the event loop.

An object's database commits on the event loop with ``synchronous=OFF``: the
``COMMIT`` only writes the WAL frames to the operating system (tens of
microseconds), which already survives ``kill -9`` of the server.  For
``durability="full"`` the WAL file must also reach the disk before outputs are
released; :class:`FileSyncPool` does that ``fsync`` in a few threads and resolves
the commit's future when it is done.  Requests for the same file that arrive
while none of its syncs has started share one ``fsync``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from typing import Final

from ..errors import CommitFailed

__all__ = ["FileSyncPool"]

_THREADS: Final = 4


class FileSyncPool:
    """Threads that ``fsync`` WAL files on request (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, threads: int = _THREADS) -> None:
        self._loop = loop
        self._lock = threading.Condition()
        self._pending: dict[str, list[asyncio.Future[None]]] = {}
        # A file whose fsync failed stays failed: the kernel may have dropped
        # the pages it could not write, so no later fsync can vouch for them.
        self._failed: dict[str, BaseException] = {}
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._main, name=f"roost-wal-sync-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()
        #: How many ``fsync`` calls were made (for measurements).
        self.syncs = 0

    def sync(self, path: str) -> asyncio.Future[None]:
        """A future that resolves once everything written to ``path`` so far is on disk."""
        future = self._loop.create_future()
        with self._lock:
            self._pending.setdefault(path, []).append(future)
            self._lock.notify()
        return future

    def close(self) -> None:
        """Finish every requested sync, then stop the threads."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        for thread in self._threads:
            thread.join()

    def _main(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._stopping:
                    self._lock.wait()
                if not self._pending:
                    return
                path, futures = self._pending.popitem()
                error = self._failed.get(path)
            if error is None:
                error = _fsync(path)
                with self._lock:
                    if error is None:
                        self.syncs += 1
                    else:
                        self._failed[path] = error
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(_resolve, futures, error)


def _fsync(path: str) -> BaseException | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        # The connection was closed: closing checkpointed the WAL into the
        # database with a synced checkpoint and removed it.
        return None
    except OSError as exc:
        return exc
    try:
        os.fsync(fd)
    except OSError as exc:
        return exc
    finally:
        os.close(fd)
    return None


def _resolve(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            failure = CommitFailed(f"fsync of the object's database failed: {error}")
            failure.__cause__ = error
            future.set_exception(failure)
