"""Make any Optuna sampler respect the parameter budget by repairing its proposals, and never spend a trial on a
configuration the study has measured, failed or is training."""

from __future__ import annotations

from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from autopeft.samplers._proposals import Proposal, ProposalLog
from autopeft.space import SearchSpace

RETRIES = 16
"""Proposals of the wrapped sampler tried before falling back to a random configuration the study does not hold."""


class FeasibleSampler(ProposalLog, BaseSampler):
    """Wraps a baseline sampler: every proposal is repaired to fit the budget before it is returned.

    The wrapped sampler proposes values for every dimension; :meth:`SearchSpace.repair` then changes
    as few choices as needed to place at least one module within ``limit`` parameters. The repaired
    values are what Optuna records, so the study only ever holds configurations that were trained.
    A proposal equal to a configuration that failed before, was measured, or is training in another trial is
    drawn again (up to :data:`RETRIES` times, then a random feasible one, recorded as a fallback).
    A trial withdrawn before training, or one whose parameters do not cover the space (a kill during its
    proposal), blocks nothing.

    Args:
        base: the sampler to wrap (random, TPE, NSGA-II, ...).
        space: the bound search space.
        limit: the largest allowed trainable-parameter count.
    """

    def __init__(self, base: BaseSampler, space: SearchSpace, limit: int, name: str = "") -> None:
        self._base = base
        self._space = space
        self._limit = limit
        self._name = name or type(base).__name__

    def __str__(self) -> str:
        return f"Feasible({self._base})"

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self._space.dimensions)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        states = (TrialState.FAIL, TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        held = {
            self._space.key(t.params)
            for t in study.get_trials(deepcopy=False, states=states)
            if t.number != trial.number and not t.user_attrs.get("withdrawn") and self._space.covers(t.params)
        }
        for _ in range(RETRIES):
            base_space = self._base.infer_relative_search_space(study, trial)
            values = dict(self._base.sample_relative(study, trial, base_space)) if base_space else {}
            for name, dist in self._space.dimensions.items():
                if name not in values:
                    values[name] = self._base.sample_independent(study, trial, name, dist)
            repaired = self._space.repair(values, self._limit)
            if self._space.key(repaired) not in held:
                self._record(trial.number, Proposal(self._name, repaired=repaired != values))
                return repaired
        rng = np.random.default_rng(trial.number)
        for _ in range(RETRIES):
            repaired = self._space.repair(self._space.sample(rng), self._limit)
            if self._space.key(repaired) not in held:
                break
        reason = f"{self._name} proposed only configurations the study holds ({RETRIES} tries)"
        self._record(trial.number, Proposal("fallback", reason, repaired=True))
        return repaired

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._base.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: list[float] | None) -> None:
        self._base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._base.reseed_rng()
