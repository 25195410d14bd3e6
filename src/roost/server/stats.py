"""The opt-in statistics route: the runtime's counters as JSON, for operators and benchmarks.

``App(stats_path="/_roost/stats")`` (or ``roost serve --stats-path /_roost/stats``)
answers ``GET`` on that path itself, before the front code sees the request.
It reports counts only (no IDs, names or data), but it still tells the world
how busy the server is: expose it only where that is fine, or behind a proxy
that keeps it internal.

It stays for existing users; for monitoring, ``/metrics`` on the admin port
(``roost serve --admin``, :mod:`roost.admin.metrics`) reads the same counters
behind a token, off the app's port.  The admin page's overview includes this
snapshot (:func:`statistics`).
"""

from __future__ import annotations

import dataclasses
import resource
from typing import Any

import starlette.responses

from ..runtime import Runtime

__all__ = ["statistics", "stats_response"]


def statistics(runtime: Runtime, *, websockets: int) -> dict[str, Any]:
    """A snapshot: runtime, hibernation registry, alarms, open connections, process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "runtime": dataclasses.asdict(runtime.statistics()),
        "websockets": {
            **dataclasses.asdict(runtime.websockets.statistics()),
            "connections": websockets,
        },
        "alarms": dataclasses.asdict(runtime.alarms.statistics()),
        "storage": {
            **dataclasses.asdict(runtime.engine.statistics()),
            # None: an engine that keeps nothing (in memory).
            "durability": getattr(runtime.engine, "durability", None),
        },
        "process": {
            "rss_bytes": _rss_bytes(),
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
        },
    }


def stats_response(runtime: Runtime, *, websockets: int) -> starlette.responses.Response:
    """``statistics()`` as a JSON response that no cache keeps."""
    return starlette.responses.JSONResponse(
        statistics(runtime, websockets=websockets), headers={"cache-control": "no-store"}
    )


def _rss_bytes() -> int | None:
    # Resident memory now (getrusage only knows the peak); Linux only.
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return None
