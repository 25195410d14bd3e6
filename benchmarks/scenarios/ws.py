"""ws-broadcast: one chat room of ``examples/chat`` under WebSocket load.

The server is ``roost serve examples/chat`` pinned to the server core; the load
generator (``wsload.py``, a light client in its own process) is pinned to the
load core.  Two parts, each on a fresh server and data directory:

* **broadcast**: 100 members in one room, 20 of them posting with 2 messages
  each in flight; figures are deliveries per second (chat messages received by
  all clients), the same per second of the server's CPU time (less sensitive
  to a noisy machine), and the posting latency.  Every run checks that nothing
  was lost, duplicated or reordered.
* **idle**: 10,000 connections accepted for hibernation and left idle; the
  server's RSS per connection once the room object was evicted.

``CHAT_RATE_LIMIT=0/1`` turns the example's per-IP limit off (every message
still consults the limiter object); each client connects from its own loopback
address, as distinct users would.
"""

from __future__ import annotations

import json
import resource
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ..harness import LOAD_CORE, ROOT, VENV_BIN, Figure, free_port, pinned, server

STATS = "/_roost/stats"


def _serve(port: int, data: Path) -> tuple[list[str], dict[str, str]]:
    argv = [
        str(VENV_BIN / "roost"), "serve", "examples/chat",
        "--host", "127.0.0.1", "--port", str(port), "--data", str(data),
        "--log-level", "warning", "--stats-path", STATS,
    ]  # fmt: skip
    return argv, {"CHAT_RATE_LIMIT": "0/1"}


def _load(mode: str, port: int, pid: int, options: list[str]) -> dict[str, Any]:
    argv = pinned(
        LOAD_CORE,
        [
            str(VENV_BIN / "python"), "-m", "benchmarks.scenarios.wsload", mode,
            "--port", str(port), "--server-pid", str(pid), "--stats", STATS, *options,
        ],
    )  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"wsload {mode} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["problems"]:
        raise AssertionError(f"ws-broadcast {mode}: {result['problems']}")
    return result


def _raise_fd_limit() -> None:
    # The server inherits it: 10,000 sockets need more than the usual 1,024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def measure(mode: str, options: list[str]) -> dict[str, Any]:
    """One run of ``mode`` against a fresh server."""
    _raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="bench-ws-") as tmp:
        port = free_port()
        argv, env = _serve(port, Path(tmp))
        with server(argv, port=port, env=env) as proc:
            return _load(mode, port, proc.pid, options)


def run(quick: bool, runs: int, only: set[str]) -> list[Figure]:
    if "ws-broadcast" not in only:
        return []
    name = "ws-broadcast"
    rate = Figure(name, "deliveries/s", "msg/s")
    per_cpu = Figure(name, "deliveries per server CPU-second", "msg/cpu-s")
    p50 = Figure(name, "post latency p50", "ms", higher_is_better=False)
    p99 = Figure(name, "post latency p99", "ms", higher_is_better=False)
    rss = Figure(name, "RSS per idle hibernated connection", "KiB", higher_is_better=False)
    seconds = ["--warmup", "0.5", "--seconds", "1"] if quick else ["--seconds", "5"]
    connections = "1000" if quick else "10000"
    notes = []
    for _ in range(runs):
        result = measure("broadcast", seconds)
        rate.runs.append(result["deliveries_per_s"])
        per_cpu.runs.append(result["deliveries_per_cpu_s"])
        p50.runs.append(result["latency_p50_ms"])
        p99.runs.append(result["latency_p99_ms"])
        notes.append(f"server CPU {100 * result['server_cpu_share']:.0f}%")
    rate.note = (
        f"{result['clients']} clients, {result['senders']} senders; verified: every client got "
        f"every message in order; {', '.join(notes)}"
    )
    for _ in range(runs):
        result = measure("idle", ["--connections", connections])
        rss.runs.append(result["rss_per_connection_kib"])
        rss.note = (
            f"{result['connections']} connections; RSS {result['rss_before_mib']:.0f} -> "
            f"{result['rss_after_mib']:.0f} MiB; room evicted "
            f"(live objects {result['live_objects_after']}) {result['eviction_wait_s']:.0f} s "
            "after the last accept; ping auto-answered without waking it"
        )
    return [rate, per_cpu, p50, p99, rss]
