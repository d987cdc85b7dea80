"""Reading seeded results back from a study: summaries over seeds, and each trial's retrained runs.

``retrain`` stores a trial's full-fidelity runs in the study (attribute ``autopeft.retrain.<trial>``);
everything that shows or exports them (``pareto``, ``export``, ``report``) reads them here, so the
readers sit below every command that writes them.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

import optuna

RETRAIN_ATTR = "autopeft.retrain."
"""Prefix of the study attribute holding a trial's retrain runs (``autopeft.retrain.7``; the status quo's:
``autopeft.retrain.status_quo``)."""
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


def retrain_runs(study: optuna.Study, trial: int | str) -> list[dict[str, Any]]:
    """The stored retrain runs of one trial (empty when never retrained).

    Args:
        study: the study.
        trial: the trial number (or ``status_quo``).
    """
    return list(study.user_attrs.get(f"{RETRAIN_ATTR}{trial}", []))


def retrain_summaries(study: optuna.Study) -> dict[int | str, tuple[SeedSummary, str]]:
    """Trial number (or ``status_quo``) -> (summary over seeds, settings label) of everything retrained.

    When a trial was retrained at several settings, the settings of its latest run count.

    Args:
        study: the study.
    """
    found = {}
    for key in study.user_attrs:
        if not key.startswith(RETRAIN_ATTR):
            continue
        runs = [r for r in study.user_attrs[key] if "metric" in r]
        if runs:
            settings = runs[-1]["settings"]
            latest = [r for r in runs if r["settings"] == settings]
            name = key.removeprefix(RETRAIN_ATTR)
            found[int(name) if name.isdigit() else name] = (summarize(latest), settings)
    return found


def validation_results(study: optuna.Study) -> dict[int, dict[str, Any]]:
    """Trial number -> its retrained metric on the validation split (``mean``, ``std``, ``seeds``, ``settings``).

    These are the figures to report: a search's own metric is the one that selected the trial.

    Args:
        study: the study.
    """
    return {
        trial: {"mean": summary.mean, "std": summary.std, "seeds": summary.seeds, "settings": settings}
        for trial, (summary, settings) in retrain_summaries(study).items()
    }
