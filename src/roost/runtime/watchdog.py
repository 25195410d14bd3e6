"""The loop watchdog: a warning, with a stack, when something holds the event loop.

Every object of a process shares one event loop, so an event that computes
for seconds without awaiting (a tight loop, a huge JSON document, a blocking
call) stalls every other object and connection.  Nothing can interrupt it
from inside the loop; a small thread can see it happen and say where: the
loop beats a heartbeat every quarter threshold, and when the heartbeat is
older than the threshold the thread logs the loop thread's current stack
once per stall, at WARNING on ``roost.runtime``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback

__all__ = ["LoopWatchdog"]

log = logging.getLogger("roost.runtime")

#: Frames of the blocked stack worth showing (the innermost ones).
_STACK_FRAMES = 12


class LoopWatchdog:
    """Warns when the event loop is held for more than ``threshold`` seconds."""

    def __init__(self, threshold: float | None) -> None:
        if threshold is not None and (isinstance(threshold, bool) or not threshold > 0):
            raise ValueError(
                f"loop_block_warning must be a positive number or None, not {threshold!r}"
            )
        self.threshold = threshold
        self._beat = time.monotonic()
        self._handle: asyncio.TimerHandle | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop_thread = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.threshold is None:
            return
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._beat_now()
        self._thread = threading.Thread(target=self._watch, name="roost-loop-watchdog", daemon=True)
        self._thread.start()

    def _beat_now(self) -> None:
        assert self.threshold is not None and self._loop is not None
        self._beat = time.monotonic()
        self._handle = self._loop.call_later(self.threshold / 4, self._beat_now)

    def _watch(self) -> None:
        assert self.threshold is not None
        reported = 0.0
        while not self._stop.wait(self.threshold / 4):
            beat = self._beat
            held = time.monotonic() - beat
            if held > self.threshold and beat != reported:
                reported = beat
                frame = sys._current_frames().get(self._loop_thread)
                stack = "".join(traceback.format_stack(frame, _STACK_FRAMES)) if frame else ""
                log.warning(
                    "the event loop has been blocked for %.1f s (over loop_block_warning=%g s): "
                    "code that runs without awaiting stalls every object and connection; "
                    "move CPU-bound work to a thread or process. It is running:\n%s",
                    held,
                    self.threshold,
                    stack.rstrip(),
                )

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
