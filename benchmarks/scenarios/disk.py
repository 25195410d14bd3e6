"""The disk's own commit latency: a WAL-frame-sized write and an ``fsync``, nothing else.

``http-inc-hot-c1`` answers each request only after the ``fsync`` of its commit,
so no durable server on this disk can have a latency percentile below this one's.
It is measured in the same rounds, on the file system that holds the servers'
data, the way SQLite appends one frame to a write-ahead log it has used before
(a 24-byte frame header and a 1 KiB page, over blocks written and synced earlier),
with a gap between commits like the gap between one connection's requests.
"""

from __future__ import annotations

import os
import tempfile
import time

#: The WAL frame of a 1 KiB page: a 24-byte header, then the page.
_HEADER, _PAGE = b"h" * 24, b"p" * 1024
#: Frames fit this much of the file before the writes wrap to its start.
_SPAN = 1 << 20
#: Pause between two commits (``http-inc-hot-c1`` makes one every ~0.6 ms).
_GAP_S = 0.0004


def fsync_latencies(count: int, core: str) -> list[float]:
    """``count`` latencies (µs) of one frame's write plus its ``fsync``, pinned to ``core``."""
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(core)})
    try:
        with tempfile.TemporaryDirectory(prefix="bench-disk-") as tmp:
            fd = os.open(os.path.join(tmp, "wal"), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                os.pwrite(fd, bytes(_SPAN + len(_HEADER) + len(_PAGE)), 0)
                os.fsync(fd)
                return _measure(fd, count)
            finally:
                os.close(fd)
    finally:
        os.sched_setaffinity(0, affinity)


def _measure(fd: int, count: int) -> list[float]:
    latencies = []
    offset = 0
    for _ in range(count):
        time.sleep(_GAP_S)
        start = time.perf_counter()
        os.pwrite(fd, _HEADER, offset)
        os.pwrite(fd, _PAGE, offset + len(_HEADER))
        os.fsync(fd)
        latencies.append((time.perf_counter() - start) * 1e6)
        offset = (offset + len(_HEADER) + len(_PAGE)) % _SPAN
    return latencies
