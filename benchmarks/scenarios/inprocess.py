"""Shared plumbing for scenarios that run Roost in-process (no HTTP)."""

from __future__ import annotations

import statistics
from collections.abc import Callable

from ..harness import Figure, run_python


def repeat(
    module: str,
    scenario: str,
    *,
    quick: bool,
    runs: int,
    units: dict[str, tuple[str, bool]],
) -> list[Figure]:
    """Run ``module`` ``runs`` times pinned to one core; collect each figure's runs.

    An item with ``steal_pct`` (the core's steal time while it was measured)
    adds it to the figure's :attr:`~benchmarks.harness.Figure.steal`.
    """
    figures: dict[str, Figure] = {}
    for _ in range(runs):
        for item in run_python(module, ["--quick"] if quick else []):
            name = item["figure"]
            unit, higher = units.get(name, (item.get("unit", ""), True))
            fig = figures.setdefault(name, Figure(scenario, name, unit, higher_is_better=higher))
            fig.runs.append(float(item["value"]))
            if "steal_pct" in item:
                fig.steal.setdefault("roost", []).append(round(float(item["steal_pct"]), 2))
            if item.get("note"):
                fig.note = item["note"]
    return list(figures.values())


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def median_of(values: list[float]) -> float:
    return statistics.median(values)


Timer = Callable[[], float]
