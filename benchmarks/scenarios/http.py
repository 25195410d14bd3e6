"""HTTP scenarios: Roost's counter example against the two baselines, under wrk."""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..harness import (
    SERVER_CORE,
    VENV_BIN,
    Figure,
    core_ticks,
    cpu_seconds,
    free_port,
    http_get,
    server,
    steal_percent,
    wrk,
)
from .disk import fsync_latencies
from .inprocess import percentile


def _commands(kind: str, port: int, data: Path) -> tuple[list[str], dict[str, str]]:
    uvicorn = [
        str(VENV_BIN / "uvicorn"),
        "--host", "127.0.0.1", "--port", str(port),
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    if kind == "roost":
        return [
            str(VENV_BIN / "roost"), "serve", "examples/counter.py",
            "--host", "127.0.0.1", "--port", str(port), "--data", str(data),
        ], {}  # fmt: skip
    if kind == "dict":
        return [*uvicorn, "benchmarks.baselines.dict_app:app"], {}
    return [*uvicorn, "benchmarks.baselines.sqlite_app:app"], {
        "COUNTER_DB": str(data / "counters.sqlite3")
    }


TARGETS = ("roost", "dict", "sqlite")
#: ``http-inc-hot-c1`` also serves Roost from a memory file system, where an
#: ``fsync`` returns at once: the same code path and default durability with
#: the disk taken out, so what is left is Roost's own latency and the machine's.
_TMPFS = "/dev/shm"
_ON_TMPFS = "roost-tmpfs"
_C1_TARGETS = (*TARGETS, _ON_TMPFS)


def _measure(
    scenario: str, *, path: str, connections: int, spread: int, quick: bool, runs: int
) -> dict[str, list[dict[str, float]]]:
    seconds = 1 if quick else 8
    targets: tuple[str, ...] = TARGETS
    if scenario == "http-inc-hot-c1" and os.path.isdir(_TMPFS):
        targets = _C1_TARGETS
    results: dict[str, list[dict[str, float]]] = {t: [] for t in targets}
    for run in range(runs):
        # Rotate the order so no target always runs first (or on a warmer machine).
        turn = run % len(targets)
        for target in targets[turn:] + targets[:turn]:
            on_tmpfs = target == _ON_TMPFS
            with tempfile.TemporaryDirectory(
                prefix=f"bench-{target}-", dir=_TMPFS if on_tmpfs else None
            ) as tmp:
                port = free_port()
                argv, env = _commands("roost" if on_tmpfs else target, port, Path(tmp))
                url = f"http://127.0.0.1:{port}"
                with server(argv, port=port, env=env) as proc:
                    warm = wrk(url, seconds=1, connections=connections, path=path, spread=spread)
                    cpu, ticks = cpu_seconds(proc.pid), core_ticks(SERVER_CORE)
                    report = wrk(
                        url, seconds=seconds, connections=connections, path=path, spread=spread
                    )
                    report["cpu_s"] = cpu_seconds(proc.pid) - cpu
                    report["steal_pct"] = steal_percent(ticks, core_ticks(SERVER_CORE))
                    if scenario == "http-inc-hot":
                        stored = int(http_get(f"{url}/counter/hot"))
                        ok = warm["ok"] + report["ok"]
                        unanswered = (warm["sent"] - warm["ok"]) + (report["sent"] - report["ok"])
                        report["stored"] = stored
                        report["acked"] = ok
                        report["unanswered"] = unanswered
                        if not ok <= stored <= ok + unanswered:
                            raise AssertionError(
                                f"{target}: stored {stored} but {ok} increments were "
                                f"acknowledged and {unanswered} were unanswered"
                            )
                results[target].append(report)
        if scenario == "http-inc-hot-c1":
            # The floor under every target's latency, measured in the same round.
            samples = fsync_latencies(200 if quick else 2000, SERVER_CORE)
            results.setdefault("disk", []).append(
                {"p50_us": percentile(samples, 50), "p99_us": percentile(samples, 99)}
            )
    return results


def _throughput(scenario: str, results: dict[str, list[dict[str, float]]]) -> list[Figure]:
    """Requests per second, and requests per second of the server's CPU time.

    The second is what a whole core would give: on a shared machine whose
    neighbours take part of the server's core (steal time) it moves less than
    the first, so it says whether a change in throughput is the server's own.
    """
    figure = _figure(Figure(scenario, "throughput", "req/s"), results, _rps)
    per_cpu = _figure(
        Figure(scenario, "requests per server CPU-second", "req/cpu-s"), results, _per_cpu_second
    )
    errors = sum(r["errors"] for r in results["roost"])
    if errors:
        figure.note = f"{errors} non-2xx/socket errors in Roost's runs"
    return [figure, per_cpu]


#: Each baseline's name in the figures, by its target name here.
_BASELINES = {"dict": "a-dict", "sqlite": "b-sqlite"}


def _figure(
    figure: Figure,
    results: dict[str, list[dict[str, float]]],
    measure: Callable[[dict[str, float]], float],
) -> Figure:
    """``figure`` with every target's runs measured by ``measure``, and the steal
    time of the server core during each run."""
    figure.runs = [measure(r) for r in results["roost"]]
    figure.baselines = {name: [measure(r) for r in results[t]] for t, name in _BASELINES.items()}
    figure.steal = {_BASELINES.get(t, t): _steal(results[t]) for t in TARGETS}
    return figure


def _steal(reports: list[dict[str, float]]) -> list[float]:
    return [round(r["steal_pct"], 2) for r in reports]


def _latency_ms(pct: str, report: dict[str, float]) -> float:
    return report[f"{pct}_us"] / 1000


def _rps(report: dict[str, float]) -> float:
    return report["rps"]


def _per_cpu_second(report: dict[str, float]) -> float:
    return report["requests"] / report["cpu_s"] if report["cpu_s"] else float("nan")


#: Scenario name -> (path, connections, counters chosen at random; 0: one hot counter).
SCENARIOS: dict[str, tuple[str, int, int]] = {
    "http-read-hot": ("/counter/hot", 64, 0),
    "http-inc-hot": ("/counter/hot/increment", 64, 0),
    "http-inc-spread": ("/counter/hot/increment", 64, 10_000),
    "http-inc-hot-c1": ("/counter/hot/increment", 1, 0),
}


def run(quick: bool, runs: int, only: set[str]) -> list[Figure]:
    figures: list[Figure] = []
    for scenario, (path, connections, spread) in SCENARIOS.items():
        if scenario not in only:
            continue
        res = _measure(
            scenario, path=path, connections=connections, spread=spread, quick=quick, runs=runs
        )
        if scenario != "http-inc-hot-c1":
            fig, per_cpu = _throughput(scenario, res)
            if scenario == "http-inc-hot":
                checks = [
                    f"stored {r['stored']:.0f} = acked {r['acked']:.0f} + "
                    f"{r['stored'] - r['acked']:.0f} of {r['unanswered']:.0f} unanswered at stop"
                    for r in res["roost"]
                ]
                fig.note = "; ".join(filter(None, [fig.note, *checks]))
            figures += [fig, per_cpu]
            continue
        for pct in ("p50", "p99"):
            fig = Figure("http-inc-hot-c1", f"latency {pct}", "ms", higher_is_better=False)
            figures.append(_figure(fig, res, functools.partial(_latency_ms, pct)))
        for pct in ("p50", "p99"):
            name = f"disk alone: write + fsync {pct}"
            disk = Figure("http-inc-hot-c1", name, "ms", higher_is_better=False)
            disk.runs = [_latency_ms(pct, r) for r in res["disk"]]
            disk.note = "one WAL frame and an fsync, no server (benchmarks/scenarios/disk.py)"
            figures.append(disk)
        if _ON_TMPFS not in res:
            continue  # no memory file system here
        for pct in ("p50", "p99"):
            name = f"Roost, data on tmpfs: latency {pct}"
            own = Figure("http-inc-hot-c1", name, "ms", higher_is_better=False)
            own.runs = [_latency_ms(pct, r) for r in res[_ON_TMPFS]]
            own.steal = {"roost": _steal(res[_ON_TMPFS])}
            own.note = f"the same server with its data in {_TMPFS}, where fsync costs nothing"
            figures.append(own)
    return figures
