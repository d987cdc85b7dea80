"""Multi-objective Bayesian optimisation for PEFT spaces, as an Optuna sampler.

Only the task metric is unknown before training: the trainable-parameter fraction of a proposal is
computed exactly from its values. So one GP models the metric, and qLogNEHVI (BoTorch) scores
candidates with an objective that reads the exact parameter fraction from the candidate itself
(the last input column). Candidates come from a pool of feasible configurations (random, repaired
to the budget, plus one-change neighbours of the current Pareto set), so over-budget points are
never proposed and categorical choices stay discrete. Running trials enter as pending points, so
parallel workers receive different proposals.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from autopeft.space import SearchSpace

logger = logging.getLogger(__name__)


class BoTorchMOSampler(BaseSampler):
    """qLogNEHVI over a feasible candidate pool, after a scrambled-Sobol start.

    Args:
        space: the bound search space.
        limit: the largest allowed trainable-parameter count.
        n_startup_trials: quasi-random (Sobol, repaired to the budget) trials before the GP is used.
        pool_size: random feasible candidates scored per suggestion.
        seed: random seed.
    """

    def __init__(
        self,
        space: SearchSpace,
        limit: int,
        n_startup_trials: int = 8,
        pool_size: int = 512,
        seed: int | None = None,
    ) -> None:
        self._space = space
        self._limit = limit
        self._n_startup = n_startup_trials
        self._pool_size = pool_size
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._hyperparameters: dict[str, torch.Tensor] | None = None

    def __str__(self) -> str:
        return "BoTorchMOSampler"

    def reseed_rng(self) -> None:
        self._rng = np.random.default_rng()

    # -- Optuna interface ------------------------------------------------------------------------
    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self._space.dimensions)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._space.from_unit(param_name, self._rng.random())

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE and self._known(t)]
        pending = [t for t in trials if t.state == TrialState.RUNNING and t.number != trial.number and self._known(t)]
        if len(complete) < self._n_startup:
            return self._sobol(trial.number)
        try:
            return self._bayes(study, complete, pending)
        except Exception as exc:  # noqa: BLE001 - a failed model fit must not stop the study
            logger.warning("BoTorch proposal failed (%s: %s); proposing a random feasible configuration", type(exc).__name__, exc)
            return self._random_feasible()

    # -- proposals -----------------------------------------------------------------------------
    def _known(self, trial: FrozenTrial) -> bool:
        return set(self._space.dimensions) <= set(trial.params)

    def _sobol(self, index: int) -> dict[str, Any]:
        engine = torch.quasirandom.SobolEngine(len(self._space.dimensions), scramble=True, seed=self._seed or 0)
        point = engine.draw(index + 1)[-1].numpy()
        values = {name: self._space.from_unit(name, u) for name, u in zip(self._space.dimensions, point)}
        return self._space.repair(values, self._limit)

    def _random_feasible(self) -> dict[str, Any]:
        return self._space.repair(self._space.sample(self._rng), self._limit)

    def _features(self, params: dict[str, Any]) -> np.ndarray:
        """Unit encoding of the values, plus the exact parameter fraction of the budget (last column)."""
        count = self._space.count_params(params) or 0
        return np.append(self._space.to_unit(params), count / self._limit)

    def _bayes(self, study: Study, complete: list[FrozenTrial], pending: list[FrozenTrial]) -> dict[str, Any]:
        from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
        from botorch.acquisition.multi_objective.objective import GenericMCMultiOutputObjective
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import SingleTaskGP
        from botorch.models.transforms.outcome import Standardize
        from gpytorch.mlls import ExactMarginalLogLikelihood

        sign = 1.0 if study.directions[0] == StudyDirection.MAXIMIZE else -1.0
        x_train = torch.tensor(np.stack([self._features(t.params) for t in complete]), dtype=torch.double)
        y_train = torch.tensor([[sign * t.values[0]] for t in complete], dtype=torch.double)
        gp = SingleTaskGP(x_train, y_train, outcome_transform=Standardize(m=1))
        if self._hyperparameters is not None:  # warm start: the previous fit is a good first guess
            gp.load_state_dict(self._hyperparameters, strict=False)
        fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp))
        self._hyperparameters = {k: v for k, v in gp.state_dict().items() if "raw_" in k or "mean_module" in k}

        # objectives to maximise: the metric (modelled) and minus the parameter fraction (exact).
        def exact_params(samples: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
            metric = samples[..., 0]
            return torch.stack([metric, (-X[..., -1]).expand_as(metric)], dim=-1)

        objective = GenericMCMultiOutputObjective(exact_params)
        spread = float(y_train.max() - y_train.min()) or 1.0
        ref_point = [float(y_train.min()) - 0.1 * spread, -1.05]
        x_pending = None
        if pending:
            x_pending = torch.tensor(np.stack([self._features(t.params) for t in pending]), dtype=torch.double)
        acqf = qLogNoisyExpectedHypervolumeImprovement(
            model=gp, ref_point=ref_point, X_baseline=x_train, objective=objective, X_pending=x_pending, prune_baseline=True
        )
        seen = {self._key(t.params) for t in (*complete, *pending)}
        pool = [c for c in self._candidates(complete, sign) if self._key(c) not in seen]
        if not pool:
            return self._random_feasible()
        x_pool = torch.tensor(np.stack([self._features(c) for c in pool]), dtype=torch.double)
        with torch.no_grad():
            scores = torch.cat([acqf(chunk.unsqueeze(-2)) for chunk in x_pool.split(256)])
        return pool[int(scores.argmax())]

    def _candidates(self, complete: list[FrozenTrial], sign: float) -> list[dict[str, Any]]:
        pool = [self._random_feasible() for _ in range(self._pool_size)]
        best = sorted(complete, key=lambda t: -sign * t.values[0])[:5]
        for trial in best:
            pool.extend(n for n in self._space.neighbours(dict(trial.params)) if self._space.is_feasible(n, self._limit))
        return pool

    def _key(self, params: dict[str, Any]) -> tuple:
        return tuple(round(v, 12) if isinstance(v, float) and not math.isnan(v) else v for v in (params[n] for n in self._space.dimensions))
