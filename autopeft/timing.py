"""How long a search takes: what it will train, in full-schedule units, and the seconds that makes.

One *unit* is one training on the full schedule (the status quo's run, a confirmation, a trial trained
to the end). A trial stopped at a rung cost its rung's fraction of a unit. Successive halving's
expected promotions give the units a search will train before it starts (the start-up estimate), and
the units its stored trials have trained give the time left while it runs, at the seconds per unit
its trials measured. The display, ``status`` and the service read the time left here.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from autopeft import keys
from autopeft.study import SuccessiveHalving

if TYPE_CHECKING:
    from autopeft.study import StudyView
    from autopeft.study.spec import How

# Measured on this project's 2-core CPU machine with all-MiniLM-L6-v2 (22.7M backbone parameters)
# and one torch thread: seconds per token of a training step and of evaluation.
TRAIN_S_PER_TOKEN = 7.4e-4
EVAL_S_PER_TOKEN = 3.8e-4
REFERENCE_PARAMS = 22.7e6
TRIAL_OVERHEAD_S = 8.0


@dataclass(frozen=True)
class DataStatistics:
    """What a training's cost depends on in its data.

    Attributes:
        train_examples: examples a trial may train on (the train split less the selection part).
        train_tokens_per_example: their mean length in tokens.
        eval_tokens: tokens of the evaluated examples.
        prior_neg_loss: ``neg_loss`` of predicting the training labels' distribution on the evaluated
            examples (:func:`autopeft.objectives.prior_neg_loss`), the floor a trial's score has to clear.
    """

    train_examples: int
    train_tokens_per_example: float
    eval_tokens: int
    prior_neg_loss: float | None = None


def clock(seconds: float | None) -> str:
    """A duration as ``H:MM:SS``, rounded to the second; ``-:--:--`` while it is unknown.

    Args:
        seconds: the duration, or ``None`` when no estimate exists yet.
    """
    if seconds is None:
        return "-:--:--"
    return str(datetime.timedelta(seconds=round(max(0.0, seconds))))


def unit_seconds(settings: Any, data: DataStatistics, backbone_params: int, threads: int, rungs: int = 0) -> float:
    """A rough CPU estimate of one training on ``settings``, calibrated on this project's reference machine.

    Args:
        settings: the training settings (``ProxySettings``).
        data: the token statistics of the training and evaluation data.
        backbone_params: the backbone's parameters.
        threads: torch threads per training.
        rungs: evaluations at rungs besides the final one.
    """
    n_train = min(settings.max_train_samples or data.train_examples, data.train_examples)
    steps = math.ceil(settings.epochs * math.ceil(n_train / settings.batch_size))
    train_tokens = steps * settings.batch_size * data.train_tokens_per_example
    scale = backbone_params / REFERENCE_PARAMS / max(1, threads) ** 0.7
    evaluation = (1 + rungs) * data.eval_tokens * EVAL_S_PER_TOKEN
    return TRIAL_OVERHEAD_S + scale * (train_tokens * TRAIN_S_PER_TOKEN + evaluation)


def reach(policy: SuccessiveHalving, trials: int, first: float | None = None) -> list[float]:
    """How many of ``trials`` are expected to reach each rung of the ladder (the last: the end).

    Asynchronous successive halving lets the first ``grace - 1`` entries of a rung through and then about
    ``1 / reduction`` of the rest, so ``n_k = g + ceil((n_{k-1} - g) / reduction)`` with ``g = grace - 1``.

    Args:
        policy: the successive-halving policy.
        trials: trials that start.
        first: the first rung (default the policy's).
    """
    free = policy.grace - 1
    counts = [float(trials)]
    for _ in policy.ladder(first)[1:]:
        previous = counts[-1]
        counts.append(min(previous, free + math.ceil(max(0.0, previous - free) / policy.reduction)))
    return counts


def expected_units(policy: SuccessiveHalving, trials: int, first: float | None = None) -> float:
    """Units ``trials`` new trials are expected to train (:func:`reach` times each stretch of the ladder).

    Args:
        policy: the successive-halving policy.
        trials: trials that start.
        first: the first rung (default the policy's).
    """
    ladder = policy.ladder(first)
    counts = reach(policy, trials, first)
    return sum(n * (f - (ladder[k - 1] if k else 0.0)) for k, (n, f) in enumerate(zip(counts, ladder, strict=True)))


def confirmation_rounds(confirm: int, workers: int) -> int:
    """Rounds of training that the end of a search may add to its trials, at most: ``best`` and ``knee``
    confirmed side by side, then the picks that moved to trials not yet confirmed (up to ``confirm`` runs
    in all; see :mod:`autopeft.execution.confirmations`).

    Args:
        confirm: the study's ``confirm`` (most confirmation runs).
        workers: trainings at the same time.
    """
    first = min(confirm, 2)
    return math.ceil(first / max(1, workers)) + math.ceil((confirm - first) / max(1, workers))


def confirmation_units(confirm: int, status_quo: bool) -> int:
    """The confirmation runs a search expects at its end: ``confirm`` of the picks' and, with a status quo, one of
    the status quo's (matched to ``best``'s seeds; more only when a confirmation moves ``best``).

    Args:
        confirm: the spec's confirmation budget.
        status_quo: whether the search trains a status quo.
    """
    return confirm + int(bool(confirm) and status_quo)


def search_units(policy: SuccessiveHalving, trials_left: int, confirm: int, status_quo: bool, first=None) -> float:
    """The units a search still has to train: its trials left, the status quo when owed, the confirmations.

    Args:
        policy: the successive-halving policy.
        trials_left: trials still to start.
        confirm: confirmation runs at the end (each a unit).
        status_quo: whether the status quo still has to run.
        first: the first rung (default the policy's).
    """
    return expected_units(policy, trials_left, first) + float(status_quo) + confirm


def trained_units(trial: optuna.trial.FrozenTrial) -> float:
    """The units a stored trial has trained: its steps over the schedule's (a running one: its last rung's)."""
    attrs = trial.user_attrs
    if trial.state == TrialState.RUNNING:
        rungs = attrs.get("rungs") or []
        return float(rungs[-1]["fraction"]) if rungs else 0.0
    total = attrs.get("total_steps")
    return float(attrs.get("steps", 0)) / total if total else 0.0


def remaining_units(policy: SuccessiveHalving, trial: optuna.trial.FrozenTrial, first: float | None = None) -> float:
    """The units a running trial is expected to train yet (it may be stopped at each rung ahead).

    Args:
        policy: the successive-halving policy.
        trial: a running trial.
        first: the study's first rung.
    """
    ladder = policy.ladder(first)
    counts = reach(policy, 100, first)
    done = trained_units(trial)
    left, chance = 0.0, 1.0
    for k, fraction in enumerate(ladder):
        if fraction <= done + 1e-9:
            continue
        start = max(done, ladder[k - 1] if k else 0.0)
        left += chance * (fraction - start)
        chance *= counts[k + 1] / counts[k] if k + 1 < len(counts) and counts[k] else 0.0
    return left


def seconds_left(
    study: optuna.Study,
    policy: SuccessiveHalving,
    target: int,
    workers: int,
    confirm: int,
    status_quo_owed: bool,
    first: float | None = None,
    unit_s: float | None = None,
) -> float | None:
    """Seconds until a search holds ``target`` trials, its status quo and its confirmations: the units still
    to train (expected) x the seconds per unit its trials took / workers.

    Args:
        study: the study.
        policy: its successive-halving policy.
        target: trials it should hold.
        workers: trainings at the same time.
        confirm: confirmation runs at the end.
        status_quo_owed: whether the status quo has yet to run.
        first: the study's first rung.
        unit_s: seconds per unit on one worker (default: measured from the study's done trials; ``None``
            until one of them has trained a rung's worth).
    """
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    trials = study.get_trials(deepcopy=False, states=states)
    running = [t for t in trials if t.state == TrialState.RUNNING]
    done = [t for t in trials if t.state != TrialState.RUNNING]
    if unit_s is None:
        measured = [
            ((t.datetime_complete - t.datetime_start).total_seconds(), trained_units(t))
            for t in done
            if t.datetime_start and t.datetime_complete and trained_units(t) > 0
        ]
        if not measured:
            return None
        unit_s = sum(s for s, _ in measured) / sum(u for _, u in measured)
    left_to_start = max(0, target - len(trials))
    units = search_units(policy, left_to_start, confirm, status_quo_owed, first)
    units += sum(remaining_units(policy, t, first) for t in running)
    now = datetime.datetime.now()
    underway = sum(
        max(0.0, (now - t.datetime_start).total_seconds() - trained_units(t) * unit_s)
        for t in running
        if t.datetime_start
    )
    return max(0.0, units * unit_s - underway) / max(1, workers)


def study_seconds_left(view: StudyView, how: How | None = None, target: int | None = None) -> float | None:
    """:func:`seconds_left` of a study as stored: its first rung, its confirmations, and its status quo owed
    while the study has one (its settings name a configuration) that has not trained to the end.

    Args:
        view: the study.
        how: how it runs now (a continued study may change its trials, workers and confirmations; default:
            as it was created).
        target: trials it should hold (default: ``how.trials``).
    """
    how = how or view.spec.how
    has_status_quo = (view.attrs.get(keys.SETTINGS) or {}).get("status_quo") is not None
    first = (view.attrs.get(keys.FIRST_RUNG) or {}).get("fraction")
    return seconds_left(
        view.study,
        view.spec.what.rungs,
        target or how.trials,
        how.workers,
        confirmation_units(how.confirm, has_status_quo),
        has_status_quo and view.status_quo is None,
        first,
    )
