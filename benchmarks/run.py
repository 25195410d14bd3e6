"""``scripts/bench [--quick] [--runs N] [SCENARIO...]``: run, print a table, write JSON."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .harness import Figure
from .scenarios import alarms, cold, http, million, rpc, ws

SCENARIOS = (
    "http-read-hot",
    "http-inc-hot",
    "http-inc-spread",
    "http-inc-hot-c1",
    "rpc-inc",
    "cold-activation",
    "million-objects",
    "ws-broadcast",
    "alarms",
)
MODULES = (http, rpc, cold, million, ws, alarms)
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


def _machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "pinned": shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2,
    }


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _ratio_cell(figure: Figure, baseline: str) -> str:
    """The ratio of medians, then the range of the per-round ratios (how much
    one run can be trusted on a noisy machine)."""
    ratios = figure.ratios()
    if baseline not in ratios:
        return ""
    text = _fmt(ratios[baseline]) + "×"
    rounds = figure.round_ratios().get(baseline, [])
    if len(rounds) > 1:
        text += f" [{_fmt(min(rounds))}–{_fmt(max(rounds))}]"
    return text


def _steal_cell(figure: Figure) -> str:
    """The highest steal time of the server core in any run of the figure (any
    target): above a few %, the machine slowed that run, whatever the server did."""
    values = [v for runs in figure.steal.values() for v in runs if not math.isnan(v)]
    return _fmt(max(values)) if values else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=", ".join(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="run every scenario briefly, once")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (default 3)")
    args = parser.parse_args(argv)
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    only = set(args.scenarios or SCENARIOS)
    runs = args.runs or (1 if args.quick else 3)
    if any(s.startswith("http") for s in only) and shutil.which("wrk") is None:
        print("scripts/bench: wrk is not installed (Debian package 'wrk')", file=sys.stderr)
        return 2

    # Wide enough for the table when there is no terminal to ask (CI, a pipe).
    console = Console(width=None if sys.stdout.isatty() else 150)
    figures: list[Figure] = []
    for module in MODULES:
        for figure in module.run(args.quick, runs, only):
            figures.append(figure)
            console.print(
                f"[dim]{figure.scenario} · {figure.figure}: {_fmt(figure.median)} {figure.unit}"
            )

    table = Table(title=f"Roost benchmarks ({'quick' if args.quick else 'full'}, {runs} run(s))")
    for column in (
        "scenario",
        "figure",
        "median",
        "min",
        "max",
        "unit",
        "vs (a) dict",
        "vs (b) sqlite",
        "steal %",
    ):
        table.add_column(
            column, justify="right" if column not in ("scenario", "figure") else "left"
        )
    for f in figures:
        table.add_row(
            f.scenario,
            f.figure,
            _fmt(f.median),
            _fmt(min(f.runs)),
            _fmt(max(f.runs)),
            f.unit,
            _ratio_cell(f, "a-dict"),
            _ratio_cell(f, "b-sqlite"),
            _steal_cell(f),
        )
    console.print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "quick": args.quick,
                "runs": runs,
                "machine": _machine(),
                "figures": [f.as_json() for f in figures],
            },
            indent=2,
        )
    )
    console.print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
