"""The Pareto set of a study, and the choice of one point from it (``best``, ``knee``, a trial number).

The Pareto set is noise-aware: a trial that was *confirmed* at the end of its search (trained again
with other seeds on the same selection split, stored in the study attribute ``autopeft.confirm.<n>``)
counts with the mean of its objective values over every seed, so a lucky single draw that did not
repeat loses its place, and ``best`` and ``knee`` are chosen on those means.

The knee is the Pareto point farthest from the straight line (plane, for three objectives) through
the extreme points, with every objective scaled to [0, 1] over the Pareto set: the point after
which further savings in trainable parameters start to cost the most metric. With one or two Pareto
points, the knee is the one with the best metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from autopeft.errors import AutopeftError

CONFIRM_ATTR = "autopeft.confirm."
"""Prefix of the study attribute holding a trial's confirmation runs (``autopeft.confirm.7``): a list of
``{"seed", "values", "metric", "train_seconds"}`` or ``{"seed", "fail_reason"}``."""


def confirmation_runs(study: optuna.Study) -> dict[int, list[dict[str, Any]]]:
    """Trial number -> its stored confirmation runs (failed ones included).

    Args:
        study: the study.
    """
    return {
        int(key.removeprefix(CONFIRM_ATTR)): list(runs)
        for key, runs in study.user_attrs.items()
        if key.startswith(CONFIRM_ATTR)
    }


def mean_values(trial: FrozenTrial, confirmations: list[dict[str, Any]] | None) -> tuple[list[float], int]:
    """A trial's objective values averaged with its successful confirmation runs, and how many seeds that is.

    Args:
        trial: a finished trial.
        confirmations: its confirmation runs (see :func:`confirmation_runs`), or ``None``.
    """
    runs = [list(trial.values)] + [run["values"] for run in confirmations or () if "values" in run]
    return [float(v) for v in np.mean(np.asarray(runs, dtype=float), axis=0)], len(runs)


def task_metric(trial: FrozenTrial) -> float | None:
    """The task metric a trial measured (its ``metric`` attribute; for studies written before the score
    could be another objective, the first objective value, which then was the metric).

    Args:
        trial: a trial of an autopeft study.
    """
    if "metric" in trial.user_attrs:
        return trial.user_attrs["metric"]
    return trial.values[0] if trial.values else None


def mean_metric(trial: FrozenTrial, confirmations: list[dict[str, Any]] | None) -> tuple[float | None, int]:
    """A trial's task metric averaged with its successful confirmation runs', and how many seeds that is.

    The metric is the first objective only when the study selects on it (``--objectives metric,...``);
    this is its mean either way.

    Args:
        trial: a finished trial.
        confirmations: its confirmation runs (see :func:`confirmation_runs`), or ``None``.
    """
    draws = [task_metric(trial)] + [run["metric"] for run in confirmations or () if "values" in run]
    draws = [float(v) for v in draws if v is not None]
    return (float(np.mean(draws)) if draws else None), len(draws)


def score_name(study: optuna.Study) -> str:
    """The first objective's name: the score a study selects on (``metric`` for studies that predate the choice)."""
    return (study.user_attrs.get("autopeft.objectives") or ["metric"])[0]


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The non-dominated finished trials on their (confirmed) mean values, sorted by the first objective, best first.

    Args:
        study: the study.
    """
    return [trial for trial, _, _ in pareto_points(study)]


def pareto_points(study: optuna.Study) -> list[tuple[FrozenTrial, list[float], int]]:
    """``(trial, mean values, seeds)`` of the noise-aware Pareto set, sorted by the first mean value, best first.

    Without confirmations this is Optuna's Pareto set (``study.best_trials``) on the stored values.

    Args:
        study: the study.
    """
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return []
    confirmations = confirmation_runs(study)
    points = [(t, *mean_values(t, confirmations.get(t.number))) for t in complete]
    signs = np.array([1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in study.directions])
    gains = np.asarray([values for _, values, _ in points]) * signs  # larger is better everywhere
    # dominated: another point at least as good everywhere and strictly better somewhere
    dominated = (gains[None, :, :] >= gains[:, None, :]).all(-1) & (gains[None, :, :] > gains[:, None, :]).any(-1)
    front = [point for point, beaten in zip(points, dominated.any(axis=1), strict=True) if not beaten]
    front.sort(key=lambda p: (-signs[0] * p[1][0], p[0].number))
    return front[:1] if len(study.directions) == 1 else front  # one objective: the best, as Optuna's best_trial


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


STATUS_QUO_SUFFIX = ".status-quo"
"""The companion study of a search's status quo is named ``<study>.status-quo``."""


def status_quo_run(study: optuna.Study) -> FrozenTrial | None:
    """The status quo's run of a search, trained to the end (``None``: none yet, or a study that predates it).

    Args:
        study: the search's study.
    """
    try:
        companion = optuna.load_study(study_name=study.study_name + STATUS_QUO_SUFFIX, storage=study._storage)
    except KeyError:
        return None
    runs = companion.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return runs[0] if runs else None


@dataclass(frozen=True)
class Pick:
    """The configuration a pick names: a trial of the study, or the status quo.

    Attributes:
        which: what was asked (``knee``, ``best`` or a trial number).
        trial: the trial (the status quo's run when :attr:`is_status_quo`).
        is_status_quo: ``best`` found nothing that beat the status quo.
        verdict: why (``None`` for a trial).
    """

    which: str
    trial: FrozenTrial
    is_status_quo: bool = False
    verdict: str | None = None


def answer(study: optuna.Study, which: str) -> Pick:
    """What a pick answers: ``knee`` and trial numbers as :func:`pick_trial`; ``best`` the best trial at full
    fidelity unless its task metric (mean over its seeds, on the selection split) is below the status
    quo's, and then the status quo, with the verdict.

    Args:
        study: the study.
        which: ``knee``, ``best`` or a trial number.
    """
    status_quo = status_quo_run(study) if which == "best" else None
    if status_quo is None:
        return Pick(which, pick_trial(study, which))
    front = pareto_points(study)
    quo = status_quo.user_attrs["metric"]
    if not front:
        return Pick(which, status_quo, True, "no trial reached full fidelity: the status quo stands")
    best = front[0][0]
    metric, seeds = mean_metric(best, confirmation_runs(study).get(best.number))
    if metric is not None and metric < quo:
        verdict = (
            f"nothing beat the status quo: the best trial, {best.number}, scores {metric:.4f} (mean of {seeds} "
            f"seed{'s' * (seeds != 1)}) against the status quo's {quo:.4f} on the selection split"
        )
        return Pick(which, status_quo, True, verdict)
    return Pick(which, best)


def pick_trial(study: optuna.Study, pick: str) -> FrozenTrial:
    """Choose one trial: ``knee``, ``best`` (best metric on the Pareto set) or a trial number.

    Args:
        study: the study.
        pick: ``knee``, ``best`` or a trial number.
    """
    if pick in ("knee", "best"):
        front = pareto_points(study)
        if not front:
            raise AutopeftError(f"study {study.study_name!r} has no finished trial yet")
        if pick == "best":
            return front[0][0]
        values = np.asarray([values for _, values, _ in front], dtype=float)
        maximize = [d == StudyDirection.MAXIMIZE for d in study.directions]
        return front[knee_index(values, maximize)][0]
    if not pick.isdigit():
        raise AutopeftError(f"--pick {pick!r}: use knee, best or a trial number")
    number = int(pick)
    for trial in study.get_trials(deepcopy=False):
        if trial.number == number:
            if trial.state not in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
                raise AutopeftError(f"trial {number} of study {study.study_name!r} did not finish ({trial.state.name})")
            return trial
    raise AutopeftError(f"study {study.study_name!r} has no trial {number}")


PRIOR_SCORE_ATTR = "autopeft.prior_neg_loss"
"""Study attribute: the ``neg_loss`` of predicting the training labels' distribution on the evaluated
examples (:func:`autopeft.objectives.prior_neg_loss`), written at the start of a search that selects on it."""

LEARNT_MARGIN = 0.02
"""The smallest gain over the prior's loss, as a fraction of it, at which a search's best ``neg_loss`` counts
as learnt. Measured with the default proxy: MRPC's best trial gained 0.047 nats on the prior's 0.630 (7.4%),
RTE's best 0.009 on 0.693 (1.3%), with every RTE trial's score within 0.009 of chance."""


def learnt_margin(study: optuna.Study) -> float | None:
    """How far the Pareto set's best score (its mean over seeds) lies above the label prior's, as a fraction
    of the prior's loss; ``None`` when the study does not select on ``neg_loss`` or nothing finished.

    Below :data:`LEARNT_MARGIN` the proxy has not learnt the task: every score sits at the prior's, and
    the Pareto set's order says little about full training.

    Args:
        study: the study.
    """
    prior = study.user_attrs.get(PRIOR_SCORE_ATTR)
    points = pareto_points(study)
    if prior is None or not points or score_name(study) != "neg_loss":
        return None
    return (points[0][1][0] - prior) / abs(prior) if prior else float("inf")


def not_learnt_warning(study: optuna.Study) -> str | None:
    """One line saying that the proxy did not learn the task (see :func:`learnt_margin`), or ``None``.

    Args:
        study: the study.
    """
    margin = learnt_margin(study)
    if margin is None or margin >= LEARNT_MARGIN:
        return None
    prior = study.user_attrs[PRIOR_SCORE_ATTR]
    return (
        f"the proxy did not learn this task: the best neg_loss is {100 * margin:.1f}% above the label prior's "
        f"{prior:.4f} (at least {100 * LEARNT_MARGIN:.0f}% counts as learnt), so its ranking says little about "
        "full training; search with a longer proxy (--max-train-samples 0, --epochs 2 or more), or keep the "
        "usual LoRA r=8 on query and value"
    )
