"""A trial's life in the study, whatever runs its training: ask, record the configuration, store the result.

Every search (Ray Tune's :class:`~autopeft.execution.ray_tune.StudySearcher`) and the optimiser's
benchmark go through these functions, so the values a study holds are always computed one way:
the exact objectives by :meth:`BoundStudy.exact_values`, the measured ones from the training's result.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autopeft import failpoints, keys
from autopeft.methods.config import TrialConfig
from autopeft.samplers import ProposalLog
from autopeft.study import BoundStudy


@dataclass(frozen=True)
class StartedTrial:
    """A trial asked of the study, its configuration recorded, ready to train.

    Attributes:
        trial: the Optuna trial.
        config: its decoded configuration.
        count: its exact trainable-parameter count.
    """

    trial: optuna.Trial
    config: TrialConfig
    count: int

    @property
    def number(self) -> int:
        """The trial's number."""
        return self.trial.number


def ask(bound: BoundStudy) -> optuna.Trial:
    """Ask the study's sampler for a trial, and record on it how its values were proposed.

    Args:
        bound: the study.
    """
    started = time.perf_counter()
    trial = bound.study.ask()  # the sampler proposes every value here; each is then written in its own commit
    for name, dist in bound.space.dimensions.items():
        failpoints.pause("proposal.value")
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            trial.suggest_categorical(name, dist.choices)
        else:
            trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
    sampler = bound.study.sampler
    proposal = sampler.take_proposal(trial.number) if isinstance(sampler, ProposalLog) else None
    if proposal is not None:
        trial.set_user_attr(keys.PROPOSAL, proposal.to_dict())
    trial.set_user_attr(keys.ASK_SECONDS, round(time.perf_counter() - started, 4))  # the model and the writes
    return trial


def withdraw(bound: BoundStudy, trial: optuna.Trial, reason: str) -> None:
    """Give back a trial that will not train (its configuration did not fail: it may be proposed again).

    Args:
        bound: the study.
        trial: the trial.
        reason: why, for the trial's ``fail_reason``.
    """
    trial.set_user_attr(keys.WITHDRAWN, True)
    trial.set_user_attr(keys.FAIL_REASON, reason)
    bound.study.tell(trial, state=TrialState.FAIL)


def start(bound: BoundStudy, trial: optuna.Trial) -> StartedTrial | None:
    """Decode and count an asked trial and record its configuration and exact values on it.

    A configuration that places nothing or breaks the budget (never with autopeft's samplers) is
    failed at once and ``None`` returned.

    Args:
        bound: the study.
        trial: a trial from :func:`ask`.
    """
    space = bound.space
    config = space.decode(trial.params)
    count = None if config is None else space.count(config)
    if config is None or count > bound.limit:
        trial.set_user_attr(keys.FAIL_REASON, f"rejected before training: {count} parameters > budget {bound.limit}")
        bound.study.tell(trial, state=TrialState.FAIL)
        return None
    exact = bound.exact_values(config)
    trial.set_user_attr(keys.CONFIG, config.to_dict())
    trial.set_user_attr(keys.TRAINABLE_PARAMS, count)
    trial.set_user_attr(keys.TRAINABLE_FRACTION, exact["params"])
    trial.set_user_attr(keys.HEAD_PARAMS, bound.info.head_params)
    trial.set_user_attr(keys.TARGET_SPARSITY, exact["sparsity"])
    if "memory" in exact:
        trial.set_user_attr(keys.PREDICTED_MEMORY, exact["memory"])
    trial.set_user_attr(keys.SCORED_ON, bound.spec.what.scored_on)
    return StartedTrial(trial, config, count)


def gathered(result: dict[str, Any]) -> dict[str, Any]:
    """A training's result as Tune delivers it, made whole: the metrics gathered back (Tune flattens nested results,
    ``metrics/accuracy``), the methods' report decoded (it travels as JSON, its keys being module paths).

    Args:
        result: the reported result.
    """
    metrics = result.get("metrics") or {
        key.split("/", 1)[1]: value for key, value in result.items() if key.startswith("metrics/")
    }
    whole = {**result, "metrics": metrics}
    if isinstance(whole.get("method_report"), str):
        whole["method_report"] = json.loads(whole["method_report"])
    return whole


def objective_values(bound: BoundStudy, config: TrialConfig, result: dict[str, Any]) -> tuple[list[float], str | None]:
    """The objective values of a gathered result, and why they cannot be stored (``None`` when they can): a field
    an objective needs is missing, or a value is not finite.

    Args:
        bound: the study.
        config: the trained configuration.
        result: the training's result, gathered (:func:`gathered`).
    """
    try:
        values = bound.objective_values(config, result)
    except KeyError as exc:
        return [math.nan], f"the result lacks the objective's field {exc}"
    if not all(math.isfinite(v) for v in values):
        return values, f"non-finite objective values {values}"
    return values, None


def finish(bound: BoundStudy, started: StartedTrial, result: dict[str, Any] | None) -> FrozenTrial:
    """Store a training's result as the trial's outcome: COMPLETE, PRUNED (stopped early) or FAIL.

    Args:
        bound: the study.
        started: the trial from :func:`start`.
        result: the proxy training's result; ``None`` or ``{"failed": True, "fail_reason": ...}``
            when the training failed.

    Returns:
        The trial as stored.
    """
    study, trial = bound.study, started.trial
    if result is None or result.get("failed"):
        reason = (result or {}).get("fail_reason") or "the worker process running the trial died"
        trial.set_user_attr(keys.FAIL_REASON, reason)
        return study.tell(trial, state=TrialState.FAIL)
    result = gathered(result)
    metrics = result["metrics"]
    values, reason = objective_values(bound, started.config, result)
    if reason is not None:
        trial.set_user_attr(keys.FAIL_REASON, reason)
        return study.tell(trial, state=TrialState.FAIL)
    trial.set_user_attr(keys.METRICS, metrics)
    trial.set_user_attr(keys.METRIC, result["metric"])  # the task metric, whatever the first objective (the score)
    for key in keys.RESULT:
        if key in result:
            trial.set_user_attr(key, result[key])
    if result.get("pruned"):
        # Optuna keeps no values for a pruned multi-objective trial: the objective values at the
        # stop are user attributes (measured at a rung, part of the schedule).
        trial.set_user_attr(keys.VALUES_AT_STOP, values)
        return study.tell(trial, state=TrialState.PRUNED)
    return study.tell(trial, values)  # COMPLETE: trained to the end of the schedule, full fidelity


def record_rungs(trial: optuna.Trial, rungs: list[dict[str, Any]]) -> None:
    """Store a running trial's rungs so far (each rung's record, its ``level`` on the study's ladder), so the
    sampler learns its last rung's score while it trains on.

    Args:
        trial: the running trial.
        rungs: its rung records, in order.
    """
    trial.set_user_attr(keys.RUNGS, rungs)


def fallback_reason(trial: FrozenTrial | optuna.Trial) -> str | None:
    """Why a trial's values are a random fallback, or ``None`` when the sampler's own method proposed them.

    Args:
        trial: a trial (asked or stored).
    """
    proposal = trial.user_attrs.get(keys.PROPOSAL) or {}
    return proposal.get("reason") if proposal.get("kind") == "fallback" else None


def incomplete_trials(bound: BoundStudy) -> list[FrozenTrial]:
    """Failed trials whose values do not cover the space: their search died while their values were written
    (each is its own commit). Every sampler skips them; a search names them once when it starts.

    Args:
        bound: the study.
    """
    failed = bound.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    return [t for t in failed if not bound.space.covers(t.params)]
