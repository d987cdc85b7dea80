"""The Pareto set's arithmetic: means over a trial's seeds, non-dominated points, the knee, the hypervolume.

A trial that was *confirmed* (trained again with other seeds on the same selection split) counts with the mean of
its objective values over every seed, so a lucky single draw that did not repeat loses its place.

The knee is the Pareto point farthest from the straight line (plane, for three objectives) through the extreme
points, with every objective scaled to [0, 1] over the Pareto set: the point after which further savings in
trainable parameters start to cost the most metric. With one or two Pareto points, the knee is the one with the
best metric. :class:`autopeft.study.StudyView` applies these to what a study stored.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from optuna.trial import FrozenTrial

LEARNT_MARGIN = 0.02
"""The smallest gain over the label prior's loss, as a fraction of it, at which a ``neg_loss`` counts as learnt.
Measured with the earlier one-epoch proxy: MRPC's best trial gained 0.047 nats on the prior's 0.630 (7.4%), RTE's
best 0.009 on 0.693 (1.3%), with every RTE trial's score within 0.009 of chance."""


def mean_values(trial: FrozenTrial, confirmations: list[dict[str, Any]] | None) -> tuple[list[float], int]:
    """A trial's objective values averaged with its successful confirmation runs, and how many seeds that is.

    Args:
        trial: a finished trial.
        confirmations: its confirmation runs, or ``None``.
    """
    runs = [list(trial.values)] + [run["values"] for run in confirmations or () if "values" in run]
    return [float(v) for v in np.mean(np.asarray(runs, dtype=float), axis=0)], len(runs)


def task_metric(trial: FrozenTrial) -> float | None:
    """The task metric a trial measured (its ``metric`` attribute; for studies written before the score could be
    another objective, the first objective value, which then was the metric).

    Args:
        trial: a trial of an autopeft study.
    """
    if "metric" in trial.user_attrs:
        return trial.user_attrs["metric"]
    return trial.values[0] if trial.values else None


def mean_metric(trial: FrozenTrial, confirmations: list[dict[str, Any]] | None) -> tuple[float | None, int]:
    """A trial's task metric averaged with its successful confirmation runs', and how many seeds that is.

    Args:
        trial: a finished trial.
        confirmations: its confirmation runs, or ``None``.
    """
    draws = [task_metric(trial)] + [run["metric"] for run in confirmations or () if "values" in run]
    draws = [float(v) for v in draws if v is not None]
    return (float(np.mean(draws)) if draws else None), len(draws)


def non_dominated(points: list[tuple[Any, list[float], int]], maximize: list[bool]) -> list:
    """The points no other point dominates (at least as good everywhere, strictly better somewhere).

    Args:
        points: ``(trial, values, seeds)``.
        maximize: per objective, whether larger is better.
    """
    signs = np.array([1.0 if m else -1.0 for m in maximize])
    gains = np.asarray([values for _, values, _ in points]) * signs  # larger is better everywhere
    dominated = (gains[None, :, :] >= gains[:, None, :]).all(-1) & (gains[None, :, :] > gains[:, None, :]).any(-1)
    return [point for point, beaten in zip(points, dominated.any(axis=1), strict=True) if not beaten]


def hypervolume(values: list[list[float]] | np.ndarray, maximize: list[bool], ref: list[float]) -> float:
    """The hypervolume that points dominate up to a reference point (BoTorch's exact computation).

    Points that do not dominate ``ref`` in every objective add nothing.

    Args:
        values: ``n x m`` objective values as a study stores them.
        maximize: per objective, whether larger is better.
        ref: the reference point, in the same units and directions as ``values``.
    """
    import torch
    from botorch.utils.multi_objective.hypervolume import Hypervolume
    from botorch.utils.multi_objective.pareto import is_non_dominated

    if len(values) == 0:
        return 0.0
    signs = torch.tensor([1.0 if m else -1.0 for m in maximize], dtype=torch.double)
    y = torch.as_tensor(np.asarray(values, dtype=float), dtype=torch.double) * signs
    bound = torch.as_tensor(ref, dtype=torch.double) * signs
    y = y[(y > bound).all(dim=-1)]
    if len(y) == 0:
        return 0.0
    return float(Hypervolume(bound).compute(y[is_non_dominated(y)]))


def knee_index(values: np.ndarray, maximize: list[bool]) -> int:
    """Index of the knee among Pareto points.

    Args:
        values: ``n x m`` objective values of the Pareto points.
        maximize: per objective, whether larger is better.
    """
    n = len(values)
    if n <= 2:
        return int(np.argmax(values[:, 0] if maximize[0] else -values[:, 0]))
    scaled = np.where(maximize, values, -values).astype(float)  # larger is better everywhere
    low, high = scaled.min(axis=0), scaled.max(axis=0)
    scaled = (scaled - low) / np.where(high > low, high - low, 1.0)
    if scaled.shape[1] == 2:
        a, b = scaled[np.argmax(scaled[:, 0])], scaled[np.argmax(scaled[:, 1])]
        normal = np.array([b[1] - a[1], a[0] - b[0]])  # perpendicular to the line a -> b
        if not normal.any():
            return 0
        if normal @ (np.ones(2) - a) < 0:
            normal = -normal  # point it towards the ideal corner (1, 1)
        return int(np.argmax((scaled - a) @ normal))
    # Three or more objectives: the point closest to the ideal point (1, ..., 1).
    return int(np.argmin(np.linalg.norm(1.0 - scaled, axis=1)))
