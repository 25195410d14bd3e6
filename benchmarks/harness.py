"""The measuring instrument: pinned processes, wrk, repeated runs, medians and ratios."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
LUA = Path(__file__).resolve().parent / "lua"

#: Server on core 0, load generator on core 1, so runs compare (when there are 2 cores).
SERVER_CORE = "0"
LOAD_CORE = "1"


def _can_pin() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pinned(core: str, argv: Sequence[str]) -> list[str]:
    return ["taskset", "-c", core, *argv] if _can_pin() else list(argv)


@dataclass
class Figure:
    """One measured figure: every run of Roost and of each baseline, same invocation."""

    scenario: str
    figure: str
    unit: str
    higher_is_better: bool = True
    runs: list[float] = field(default_factory=list)
    baselines: dict[str, list[float]] = field(default_factory=dict)
    note: str = ""
    #: The server core's steal time during each timed run, in % of its ticks, by
    #: target ("roost" and each baseline's name); empty where it was not measured.
    steal: dict[str, list[float]] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else float("nan")

    def ratios(self) -> dict[str, float]:
        """Roost's median over each baseline's median (both in this invocation)."""
        out = {}
        for name, values in self.baselines.items():
            base = statistics.median(values) if values else float("nan")
            out[name] = self.median / base if base else float("nan")
        return out

    def round_ratios(self) -> dict[str, list[float]]:
        """Roost's run over the same round's baseline run, for each round.

        The targets of one round run back to back (``http``: in rotating order),
        so a slow spell of a shared machine weighs on both sides of a round's
        ratio; the spread of these ratios shows how far one invocation can be
        trusted.  Empty for a baseline measured a different number of times.
        """
        out = {}
        for name, values in self.baselines.items():
            if len(values) == len(self.runs):
                pairs = zip(self.runs, values, strict=True)
                out[name] = [run / base if base else float("nan") for run, base in pairs]
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "figure": self.figure,
            "unit": self.unit,
            "runs": self.runs,
            "median": self.median,
            "min": min(self.runs) if self.runs else None,
            "max": max(self.runs) if self.runs else None,
            "baselines": {
                name: {"runs": values, "median": statistics.median(values) if values else None}
                for name, values in self.baselines.items()
            },
            "ratio": self.ratios(),
            "round_ratios": self.round_ratios(),
            "server_core_steal_pct": self.steal,
            "note": self.note,
        }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def core_ticks(core: str) -> tuple[int, int]:
    """(steal, all) clock ticks of one CPU so far, from ``/proc/stat``.

    Steal is time the hypervisor gave this virtual CPU's slot to someone else:
    on a shared machine, one part of a slow run that is not the server's doing.
    """
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith(f"cpu{core} "):
                ticks = [int(x) for x in line.split()[1:]]
                return (ticks[7] if len(ticks) > 7 else 0), sum(ticks[:8])
    return 0, 0


def steal_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Steal over all ticks between two :func:`core_ticks` readings, in %."""
    total = after[1] - before[1]
    return 100 * (after[0] - before[0]) / total if total > 0 else float("nan")


def http_get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return str(response.read().decode())


@contextmanager
def server(
    argv: Sequence[str], *, port: int, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server pinned to the server core until the block ends (then SIGTERM).

    Yields the process (``taskset`` execs the server, so its pid is the server's).
    """
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        pinned(SERVER_CORE, argv),
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(
                    f"server {' '.join(argv)} exited with {proc.returncode}:\n"
                    + log.read().decode(errors="replace")[-2000:]
                )
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"server {' '.join(argv)} did not listen on {port}"
                    ) from None
                time.sleep(0.05)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def wrk(
    url: str,
    *,
    seconds: float,
    connections: int,
    path: str,
    spread: int = 0,
) -> dict[str, Any]:
    """Run wrk (one thread, pinned to the load core) and return report.lua's summary."""
    argv = pinned(
        LOAD_CORE,
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(LUA / "report.lua"),
            url,
            "--",
            path,
            str(spread),
        ],
    )
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr or done.stdout}")
    line = done.stdout.strip().splitlines()[-1]
    report: dict[str, Any] = json.loads(line)
    report["rps"] = report["requests"] / (report["duration_us"] / 1e6)
    return report


def run_python(module: str, args: Sequence[str], *, timeout: float = 1800) -> list[dict[str, Any]]:
    """Run ``python -m module args`` pinned to the server core; it prints JSON figures."""
    argv = pinned(SERVER_CORE, [str(VENV_BIN / "python"), "-m", module, *args])
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed:\n{done.stderr[-3000:]}")
    figures: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def emit(figures: list[dict[str, Any]]) -> None:
    """What a scenario module prints: one JSON line with its figures."""
    sys.stdout.write(json.dumps(figures) + "\n")
    sys.stdout.flush()
