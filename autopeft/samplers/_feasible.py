"""Make any Optuna sampler respect the parameter budget by repairing its proposals."""

from __future__ import annotations

from typing import Any

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from autopeft.space import SearchSpace


class FeasibleSampler(BaseSampler):
    """Wraps a baseline sampler: every proposal is repaired to fit the budget before it is returned.

    The wrapped sampler proposes values for every dimension; :meth:`SearchSpace.repair` then changes
    as few choices as needed to place at least one module within ``limit`` parameters. The repaired
    values are what Optuna records, so the study only ever holds configurations that were trained.

    Args:
        base: the sampler to wrap (random, TPE, NSGA-II, ...).
        space: the bound search space.
        limit: the largest allowed trainable-parameter count.
    """

    def __init__(self, base: BaseSampler, space: SearchSpace, limit: int) -> None:
        self._base = base
        self._space = space
        self._limit = limit

    def __str__(self) -> str:
        return f"Feasible({self._base})"

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self._space.dimensions)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        base_space = self._base.infer_relative_search_space(study, trial)
        values = dict(self._base.sample_relative(study, trial, base_space)) if base_space else {}
        for name, dist in self._space.dimensions.items():
            if name not in values:
                values[name] = self._base.sample_independent(study, trial, name, dist)
        return self._space.repair(values, self._limit)

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
