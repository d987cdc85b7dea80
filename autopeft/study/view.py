"""Reading a study back: one view that joins what a search stored (trials, confirmations, retrains, the status quo)
once, and answers every reader's question: the spec, the trials, the Pareto set, a pick, a trial's record.

A :class:`StudyView` is a snapshot: build another to see what a running search stored since. ``pareto``,
``export``, ``report``, ``status``, the tracking's sync, the display, the benches and the service read through it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from autopeft import keys
from autopeft.errors import AutopeftError
from autopeft.methods.config import TrialConfig
from autopeft.pareto import LEARNT_MARGIN, knee_index, mean_metric, mean_values, non_dominated, task_metric
from autopeft.results import STATUS_QUO_KEY, SeedSummary, summarize
from autopeft.study.binding import STATUS_QUO_SUFFIX
from autopeft.study.spec import StudySpec
from autopeft.study.storage import connect_storage

DONE = (TrialState.COMPLETE, TrialState.PRUNED)
"""Trials that count towards a study's target: trained to the end, or stopped at a rung."""
SPLIT_LABELS = {
    "selection": "selection split",
    "validation": "validation split (selected and reported on the same data: optimistic)",
}
"""How each split a search can score on is named beside its figures."""


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

    @property
    def key(self) -> int | str:
        """Its trial number, or ``status_quo`` (how retrain runs and records are keyed)."""
        return STATUS_QUO_KEY if self.is_status_quo else self.trial.number

    @property
    def config(self) -> TrialConfig:
        """The configuration it trains."""
        return TrialConfig.from_dict(self.trial.user_attrs[keys.CONFIG])


class StudyView:
    """What a study holds, read once.

    Args:
        study: the study.
    """

    def __init__(self, study: optuna.Study) -> None:
        self.study = study

    @classmethod
    def load(cls, name: str, storage: str) -> StudyView:
        """The view of a study in a storage, with a one-line error listing the known ones when it is missing.

        Args:
            name: the study's name.
            storage: its Optuna storage URL.
        """
        from autopeft.study.spec import mask_url

        backend = connect_storage(storage)
        try:
            return cls(optuna.load_study(study_name=name, storage=backend))
        except KeyError:
            names = [s.study_name for s in optuna.get_all_study_summaries(backend)]
            known = f"; studies there: {', '.join(names)}" if names else "; the storage holds no study"
            raise AutopeftError(f"no study {name!r} in {mask_url(storage)}{known}") from None

    @property
    def name(self) -> str:
        return self.study.study_name

    @functools.cached_property
    def attrs(self) -> dict[str, Any]:
        """The study's attributes (read once)."""
        return dict(self.study.user_attrs)

    # -- what was asked -----------------------------------------------------------------------------------
    @functools.cached_property
    def spec(self) -> StudySpec:
        """The spec the study was created with (URLs masked; a study of an earlier autopeft read too)."""
        if keys.SPEC not in self.attrs:
            raise AutopeftError(f"study {self.name!r} was not written by autopeft")
        return StudySpec.from_dict({k: v for k, v in self.attrs[keys.SPEC].items() if k != "model_id"})

    @property
    def backbone(self) -> str:
        """Where to load the study's backbone here (:func:`autopeft.models.resolve_backbone`)."""
        from autopeft.models import resolve_backbone

        return resolve_backbone(self.spec.what.model, self.attrs[keys.SPEC].get("model_id"))

    @property
    def scored_on(self) -> str:
        """The split the trials were scored on."""
        return self.spec.what.scored_on

    @property
    def score_name(self) -> str:
        """The first objective's name, the score the study selects on (``metric`` for older studies)."""
        return (self.attrs.get(keys.OBJECTIVES) or ["metric"])[0]

    @property
    def maximize(self) -> list[bool]:
        return [d == StudyDirection.MAXIMIZE for d in self.study.directions]

    # -- what was stored ----------------------------------------------------------------------------------
    @functools.cached_property
    def trials(self) -> list[FrozenTrial]:
        """Every trial, in order."""
        return self.study.get_trials(deepcopy=False)

    def states(self, *states: TrialState) -> list[FrozenTrial]:
        """The trials in these states."""
        return [t for t in self.trials if t.state in states]

    def trial(self, number: int) -> FrozenTrial:
        """Trial ``number``."""
        return self.trials[number]

    @functools.cached_property
    def confirmations(self) -> dict[int | str, list[dict[str, Any]]]:
        """Trial number (or ``status_quo``) -> its confirmation runs (failed ones included)."""
        return self._runs_by_key(keys.CONFIRM_PREFIX)

    def _runs_by_key(self, prefix: str) -> dict[int | str, list[dict[str, Any]]]:
        """``<prefix><trial number or status_quo>`` study attributes, keyed by trial number or ``status_quo``."""
        found: dict[int | str, list[dict[str, Any]]] = {}
        for key, runs in self.attrs.items():
            if key.startswith(prefix):
                name = key.removeprefix(prefix)
                found[int(name) if name.isdigit() else name] = list(runs)
        return found

    @functools.cached_property
    def retrains(self) -> dict[int | str, list[dict[str, Any]]]:
        """Trial number (or ``status_quo``) -> its retrain runs."""
        return self._runs_by_key(keys.RETRAIN_PREFIX)

    def retrain_summary(self, key: int | str) -> tuple[SeedSummary, str] | None:
        """The summary over seeds of a trial's retrain runs at their latest settings, and that settings' label."""
        runs = [r for r in self.retrains.get(key, []) if "metric" in r]
        if not runs:
            return None
        settings = runs[-1]["settings"]
        return summarize([r for r in runs if r["settings"] == settings]), settings

    @functools.cached_property
    def validation(self) -> dict[int | str, dict[str, Any]]:
        """Trial number -> its retrained metric on the validation split (``mean``, ``std``, ``seeds``, ``settings``):
        the figures to report (a search's own metric is the one that selected the trial)."""
        found = {}
        for key in self.retrains:
            summary = self.retrain_summary(key)
            if summary is not None:
                stats, settings = summary
                found[key] = {"mean": stats.mean, "std": stats.std, "seeds": stats.seeds, "settings": settings}
        return found

    @functools.cached_property
    def status_quo(self) -> FrozenTrial | None:
        """The status quo's run trained to the end (``None``: none yet, or a study that predates it)."""
        try:
            companion = optuna.load_study(study_name=self.name + STATUS_QUO_SUFFIX, storage=self.study._storage)
        except KeyError:
            return None
        runs = companion.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return runs[0] if runs else None

    # -- the answer -----------------------------------------------------------------------------------------
    @functools.cached_property
    def pareto(self) -> list[tuple[FrozenTrial, list[float], int]]:
        """``(trial, mean values, seeds)`` of the noise-aware Pareto set of the trials trained to the end, sorted
        by the first mean value, best first. A confirmed trial counts with the mean of its values over every
        seed, so a lucky draw that did not repeat loses its place."""
        return self.pareto_of(self.states(TrialState.COMPLETE))

    def pareto_of(self, complete: list[FrozenTrial]) -> list[tuple[FrozenTrial, list[float], int]]:
        """:attr:`pareto` of some of the trials trained to the end (what another rung rule would have kept).

        Args:
            complete: trials of the study trained to the end.
        """
        if not complete:
            return []
        points = [(t, *mean_values(t, self.confirmations.get(t.number))) for t in complete]
        front = non_dominated(points, self.maximize)
        sign = 1.0 if self.maximize[0] else -1.0
        front.sort(key=lambda p: (-sign * p[1][0], p[0].number))
        return front[:1] if len(self.study.directions) == 1 else front

    def knee_of(self, front: list[tuple[FrozenTrial, list[float], int]]) -> FrozenTrial:
        """The knee of a Pareto set (as :attr:`pareto` gives it): the point farthest from the line through the
        extremes."""
        values = np.asarray([values for _, values, _ in front], dtype=float)
        return front[knee_index(values, self.maximize)][0]

    @property
    def pareto_trials(self) -> list[FrozenTrial]:
        """The Pareto set's trials, best first."""
        return [trial for trial, _, _ in self.pareto]

    def pick_trial(self, which: str) -> FrozenTrial:
        """A trial by ``knee`` (the Pareto point farthest from the line through the extremes), ``best`` (the best
        first objective on the Pareto set) or number.

        Args:
            which: ``knee``, ``best`` or a trial number.
        """
        if which in ("knee", "best"):
            if not self.pareto:
                raise AutopeftError(f"study {self.name!r} has no finished trial yet")
            return self.pareto[0][0] if which == "best" else self.knee_of(self.pareto)
        if not which.isdigit():
            raise AutopeftError(f"--pick {which!r}: use knee, best or a trial number")
        number = int(which)
        if number >= len(self.trials):
            raise AutopeftError(f"study {self.name!r} has no trial {number}")
        trial = self.trials[number]
        if trial.state not in DONE:
            raise AutopeftError(f"trial {number} of study {self.name!r} did not finish ({trial.state.name})")
        return trial

    def pick(self, which: str) -> Pick:
        """What a pick answers: ``knee`` and trial numbers as :meth:`pick_trial`; ``best`` the best trial at full
        fidelity unless its task metric (mean over its seeds, on the scored split) is below the status quo's, and
        then the status quo, with the verdict.

        Args:
            which: ``knee``, ``best`` or a trial number.
        """
        quo = self.status_quo if which == "best" else None
        if quo is None:
            return Pick(which, self.pick_trial(which))
        if not self.pareto:
            return Pick(which, quo, True, "no trial reached full fidelity: the status quo stands")
        best = self.pareto[0][0]
        metric, seeds = mean_metric(best, self.confirmations.get(best.number))
        ours, our_seeds = self.status_quo_metric()
        if metric is not None and ours is not None and metric < ours:
            verdict = (
                f"nothing beat the status quo: the best trial, {best.number}, scores {metric:.4f} (mean of "
                f"{_seeds(seeds)}) against the status quo's {ours:.4f} (mean of {_seeds(our_seeds)}) on the "
                f"{self.scored_on} split"
            )
            return Pick(which, quo, True, verdict)
        return Pick(which, best)

    def status_quo_metric(self) -> tuple[float | None, int]:
        """The status quo's task metric, mean over its seeds (its run and its confirmations), and how many seeds."""
        if self.status_quo is None:
            return None, 0
        return mean_metric(self.status_quo, self.confirmations.get(STATUS_QUO_KEY))

    # -- records ----------------------------------------------------------------------------------------------
    def record(self, number: int) -> dict[str, Any]:
        """Trial ``number`` as the plain record ``pareto``/``trials`` print and ``pareto.csv`` holds, its
        confirmations and retrained figures joined."""
        return trial_record(self.trials[number], self.validation.get(number), self.confirmations.get(number))

    def status_quo_record(self) -> dict[str, Any] | None:
        """The status quo's run as the record shown beside the Pareto set (``trial`` is ``"status_quo"``)."""
        if self.status_quo is None:
            return None
        return status_quo_record(self.status_quo, self.confirmations.get(STATUS_QUO_KEY))

    # -- did the first rung learn -------------------------------------------------------------------------------
    @property
    def prior(self) -> float | None:
        return self.attrs.get(keys.PRIOR_NEG_LOSS)

    def learnt_margin(self) -> float | None:
        """How far the Pareto set's best score (its mean over seeds) lies above the label prior's, as a fraction of
        the prior's loss; ``None`` when the study does not select on ``neg_loss`` or nothing finished."""
        if self.prior is None or not self.pareto or self.score_name != "neg_loss":
            return None
        return (self.pareto[0][1][0] - self.prior) / abs(self.prior) if self.prior else float("inf")

    def not_learnt_warning(self) -> str | None:
        """One line saying that the trials did not learn the task (see :meth:`learnt_margin`), or ``None``."""
        margin = self.learnt_margin()
        if margin is None or margin >= LEARNT_MARGIN:
            return None
        return (
            f"the trials did not learn this task: the best neg_loss is {100 * margin:.1f}% above the label prior's "
            f"{self.prior:.4f} (at least {100 * LEARNT_MARGIN:.0f}% counts as learnt), so their ranking says little "
            "about full training; keep the usual LoRA r=8 on query and value, or search with more epochs"
        )


def trial_record(
    trial: FrozenTrial, validation: dict[str, Any] | None = None, confirmations: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """One trial as a plain record.

    ``metric`` is the task metric as the search measured it, on the split ``scored_on`` names; ``score`` is the
    first objective, what the search selects on. When the trial was confirmed, ``score_mean`` (what picks it),
    ``metric_mean`` and ``metric_seeds`` are the means over every seed on that split; ``validation``, when the
    trial was retrained, holds the validation-split figures to report.

    Args:
        trial: a trial of an autopeft study.
        validation: its retrained results on the validation split.
        confirmations: its confirmation runs.
    """
    attrs = trial.user_attrs
    record = {
        "trial": trial.number,
        "state": trial.state.name,
        "metric": task_metric(trial),
        "score": trial.values[0] if trial.values else None,
        "scored_on": keys.read_scored_on(attrs),
        "metrics": attrs.get(keys.METRICS, {}),
        "trainable_params": attrs.get(keys.TRAINABLE_PARAMS),
        "trainable_fraction": attrs.get(keys.TRAINABLE_FRACTION),
        "head_params": attrs.get(keys.HEAD_PARAMS),
        "params": attrs.get(keys.CONFIG),
    }
    if trial.values and len(trial.values) > 2:
        record["objectives"] = list(trial.values)
    if confirmations and trial.values:
        values, seeds = mean_values(trial, confirmations)
        metric, _ = mean_metric(trial, confirmations)
        record |= {
            "score_mean": values[0],
            "metric_mean": metric,
            "metric_seeds": seeds,
            "confirmations": confirmations,
        }
    if validation is not None:
        record["validation"] = validation
    if keys.FAIL_REASON in attrs:
        record["fail_reason"] = attrs[keys.FAIL_REASON]
    shown = (keys.TARGET_SPARSITY, "sparsity", "seconds", "steps", "rung_metrics", "rung_scores")
    for key in (*shown, keys.PREDICTED_MEMORY, "measured_memory_gib", "method_report"):
        if key in attrs:
            record[key] = attrs[key]
    return record


def status_quo_record(run: FrozenTrial, confirmations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The status quo's run as the record shown beside the Pareto set (``trial`` is ``"status_quo"``); when it was
    confirmed, ``metric_mean`` and ``metric_seeds`` as a trial's record has them.

    Args:
        run: its run.
        confirmations: its confirmation runs.
    """
    attrs = run.user_attrs
    confirmed: dict[str, Any] = {}
    if confirmations and run.values:
        metric, seeds = mean_metric(run, confirmations)
        confirmed = {"metric_mean": metric, "metric_seeds": seeds, "confirmations": confirmations}
    return {
        "trial": STATUS_QUO_KEY,
        "status_quo": True,
        "label": attrs.get("label"),
        "note": attrs.get("note"),
        "state": run.state.name,
        "metric": attrs.get(keys.METRIC),
        "score": run.values[0] if run.values else None,
        "scored_on": keys.read_scored_on(attrs, "selection"),
        "metrics": attrs.get(keys.METRICS, {}),
        "trainable_params": attrs.get(keys.TRAINABLE_PARAMS),
        "trainable_fraction": attrs.get(keys.TRAINABLE_FRACTION),
        "params": attrs.get(keys.CONFIG),
        "seed": attrs.get("seed"),
        "rungs": attrs.get(keys.RUNGS, []),
        **({"objectives": list(run.values)} if run.values and len(run.values) > 2 else {}),
        **{key: attrs[key] for key in (keys.PREDICTED_MEMORY, "measured_memory_gib") if key in attrs},
        **confirmed,
    }


def _seeds(count: int) -> str:
    return f"{count} seed{'s' * (count != 1)}"


def first_rung(trial: FrozenTrial) -> dict[str, Any] | None:
    """A trial's record at the study's first rung (``None`` before it got there, or when it was scored at no rung)."""
    return next((r for r in trial.user_attrs.get(keys.RUNGS, ()) if r.get("level") == 0), None)


def trial_config(trial: FrozenTrial) -> TrialConfig:
    """The configuration stored with a trial."""
    return TrialConfig.from_dict(trial.user_attrs[keys.CONFIG])


def dumps(data: Any) -> str:
    """Indented JSON, as printed by ``--json`` options."""
    return json.dumps(data, indent=2, default=str)
