"""Seeded results: a configuration's metric summarised over its seeds.

``retrain`` stores a trial's full-fidelity runs in the study (attribute ``autopeft.retrain.<trial>``); readers see
them through :class:`autopeft.study.StudyView` (``retrains``, ``validation``), which summarises them here.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

STATUS_QUO_KEY = "status_quo"
"""How the status quo is keyed where trials are keyed by number (retrain runs, records)."""


@dataclass
class SeedSummary:
    """The metric of one configuration over seeds.

    Attributes:
        mean: mean of the main metric.
        std: its sample standard deviation (0 for one seed).
        seeds: how many seeds.
        metrics: mean of every task metric.
    """

    mean: float
    std: float
    seeds: int
    metrics: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.mean:.4f} ± {self.std:.4f} (n={self.seeds})"


def summarize(runs: list[dict[str, Any]]) -> SeedSummary:
    """Mean and sample standard deviation of the main metric (and the mean of every metric) over runs.

    Args:
        runs: results with ``metric`` and ``metrics``.
    """
    runs = [r for r in runs if "metric" in r]  # failed runs have none
    if not runs:
        raise ValueError("no successful run to summarise")
    values = [float(r["metric"]) for r in runs]
    names = sorted({k for r in runs for k in r.get("metrics", {})})
    means = {k: statistics.fmean(float(r["metrics"][k]) for r in runs if k in r.get("metrics", {})) for k in names}
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return SeedSummary(statistics.fmean(values), std, len(values), means)


def closest_to_mean(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whose metric is nearest its seeds' mean (the lower seed on a tie): the one model that stands for them.

    Args:
        runs: successful runs with ``metric`` and ``seed``.
    """
    mean = summarize(runs).mean
    return min((r for r in runs if "metric" in r), key=lambda r: (abs(float(r["metric"]) - mean), r["seed"]))
