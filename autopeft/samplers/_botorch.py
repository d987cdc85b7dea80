"""Multi-objective Bayesian optimisation for PEFT spaces, as an Optuna sampler.

Some objectives are known exactly before training: the trainable-parameter fraction of a proposal
is computed from its values. Only the others (the task metric) get a GP. qLogNEHVI (BoTorch) scores
candidates with an objective that reads each known value from the candidate itself (extra input
columns), so the hypervolume improvement of the parameter axis is exact. Candidates come from a
pool of feasible configurations (random, repaired to the budget, plus one-change neighbours of the
best trials), so over-budget points are never proposed and categorical choices stay discrete.
Running trials enter as pending points, so parallel workers receive different proposals. Trials
stopped early (pruned) are observations too, with the objective values they had when stopped
(user attribute ``values_at_stop``): a pessimistic but informative point.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from autopeft.space import SearchSpace

logger = logging.getLogger(__name__)

KnownObjective = Callable[[dict[str, Any]], float]
"""The exact value of one objective for sampled values (in the study's units and direction)."""


def _observed_values(trial: FrozenTrial) -> list[float] | None:
    """Objective values of a finished trial, or of a pruned one when it was stopped; else ``None``."""
    if trial.state == TrialState.COMPLETE:
        return trial.values
    if trial.state == TrialState.PRUNED:
        return trial.user_attrs.get("values_at_stop")
    return None


class BoTorchMOSampler(BaseSampler):
    """qLogNEHVI over a feasible candidate pool, after a scrambled-Sobol start.

    Args:
        space: the bound search space.
        limit: the largest allowed trainable-parameter count.
        known: objective index -> its exact value from sampled values; the other objectives are modelled.
        n_startup_trials: quasi-random (Sobol, repaired to the budget) trials before the GP is used.
        pool_size: random feasible candidates scored per suggestion.
        seed: random seed.
    """

    def __init__(
        self,
        space: SearchSpace,
        limit: int,
        known: dict[int, KnownObjective] | None = None,
        n_startup_trials: int = 8,
        pool_size: int = 256,
        seed: int | None = None,
    ) -> None:
        self._space = space
        self._limit = limit
        self._known = dict(known or {})
        self._n_startup = n_startup_trials
        self._pool_size = pool_size
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._hyperparameters: dict[str, torch.Tensor] | None = None
        self._feature_cache: dict[tuple, np.ndarray] = {}
        self._pool: list[dict[str, Any]] = []

    MC_SAMPLES = 64
    """Quasi-Monte-Carlo samples of the posterior per acquisition value (BoTorch's default is 128)."""
    NEIGHBOURHOODS = 3
    """Best trials whose one-change neighbours join the candidate pool."""

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
        observed = [t for t in trials if _observed_values(t) is not None and self._known_params(t)]
        pending = [
            t for t in trials if t.state == TrialState.RUNNING and t.number != trial.number and self._known_params(t)
        ]
        if len(observed) < self._n_startup:
            return self._sobol(trial.number)
        try:
            return self._bayes(study, observed, pending)
        except Exception as exc:  # noqa: BLE001 - a failed model fit must not stop the study
            logger.warning("BoTorch proposal failed (%s: %s); proposing a random feasible one", type(exc).__name__, exc)
            return self._random_feasible()

    # -- proposals -----------------------------------------------------------------------------
    def _known_params(self, trial: FrozenTrial) -> bool:
        return set(self._space.dimensions) <= set(trial.params)

    def _sobol(self, index: int) -> dict[str, Any]:
        engine = torch.quasirandom.SobolEngine(len(self._space.dimensions), scramble=True, seed=self._seed or 0)
        point = engine.draw(index + 1)[-1].numpy()
        values = {name: self._space.from_unit(name, u) for name, u in zip(self._space.dimensions, point, strict=True)}
        return self._space.repair(values, self._limit)

    def _random_feasible(self) -> dict[str, Any]:
        return self._space.repair(self._space.sample(self._rng), self._limit)

    def _features(self, params: dict[str, Any]) -> np.ndarray:
        """Unit encoding of the values, then the known objectives' exact values (last columns)."""
        key = self._key(params)
        if key not in self._feature_cache:
            if len(self._feature_cache) > 20_000:
                self._feature_cache.clear()
            self._feature_cache[key] = np.append(
                self._space.to_unit(params), [fn(params) for fn in self._known.values()]
            )
        return self._feature_cache[key]

    def _bayes(self, study: Study, observed: list[FrozenTrial], pending: list[FrozenTrial]) -> dict[str, Any]:
        from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
        from botorch.acquisition.multi_objective.objective import GenericMCMultiOutputObjective
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import SingleTaskGP
        from botorch.models.transforms.outcome import Standardize
        from botorch.sampling import SobolQMCNormalSampler
        from gpytorch.mlls import ExactMarginalLogLikelihood

        n_obj = len(study.directions)
        signs = [1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in study.directions]
        modelled = [i for i in range(n_obj) if i not in self._known]
        known = list(self._known)
        width = len(self._space.dimensions)

        x_train = torch.tensor(np.stack([self._features(t.params) for t in observed]), dtype=torch.double)
        y_all = torch.tensor(
            [[signs[i] * _observed_values(t)[i] for i in range(n_obj)] for t in observed], dtype=torch.double
        )
        gp = SingleTaskGP(x_train, y_all[:, modelled], outcome_transform=Standardize(m=len(modelled)))
        options = {}
        if self._hyperparameters is not None:  # warm start: the previous fit is a good first guess,
            try:  # so a few optimiser steps refine it
                gp.load_state_dict(self._hyperparameters, strict=False)
                options = {"maxiter": 25}
            except RuntimeError:  # shapes changed (another space): fit from scratch
                pass
        fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp), optimizer_kwargs={"options": options})
        self._hyperparameters = {k: v for k, v in gp.state_dict().items() if "raw_" in k or "mean_module" in k}

        def objectives(samples: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
            """All objectives to maximise: GP samples for the modelled, exact columns for the known."""
            shape = samples.shape[:-1]
            columns = []
            for i in range(n_obj):
                if i in self._known:
                    columns.append((signs[i] * X[..., width + known.index(i)]).expand(shape))
                else:
                    columns.append(samples[..., modelled.index(i)])
            return torch.stack(columns, dim=-1)

        low, high = y_all.min(dim=0).values, y_all.max(dim=0).values
        ref_point = (low - 0.1 * torch.where(high > low, high - low, torch.ones_like(low))).tolist()
        x_pending = None
        if pending:
            x_pending = torch.tensor(np.stack([self._features(t.params) for t in pending]), dtype=torch.double)
        acqf = qLogNoisyExpectedHypervolumeImprovement(
            model=gp,
            ref_point=ref_point,
            X_baseline=x_train,
            sampler=SobolQMCNormalSampler(sample_shape=torch.Size([self.MC_SAMPLES]), seed=len(observed)),
            objective=GenericMCMultiOutputObjective(objectives),
            X_pending=x_pending,
            prune_baseline=True,
        )
        seen = {self._key(t.params) for t in (*observed, *pending)}
        pool = [c for c in self._candidates(observed, signs) if self._key(c) not in seen]
        if not pool:
            return self._random_feasible()
        x_pool = torch.tensor(np.stack([self._features(c) for c in pool]), dtype=torch.double)
        with torch.no_grad():
            scores = torch.cat([acqf(chunk.unsqueeze(-2)) for chunk in x_pool.split(256)])
        return pool[int(scores.argmax())]

    def _candidates(self, observed: list[FrozenTrial], signs: list[float]) -> list[dict[str, Any]]:
        """Random feasible values, and the feasible one-change neighbours of the best trials.

        Random values are drawn at random densities of switched-on modules (sparse and dense
        placements alike) and kept when feasible; repair, which is costlier, only tops the pool up.
        The random part is kept between suggestions and a quarter of it is renewed each time.
        """
        fresh = self._pool_size if not self._pool else self._pool_size // 4
        drawn = []
        for _ in range(4 * fresh):
            values = self._space.sample(self._rng, density=float(self._rng.uniform(0.05, 0.7)))
            if self._space.is_feasible(values, self._limit):
                drawn.append(values)
                if len(drawn) == fresh:
                    break
        drawn.extend(self._random_feasible() for _ in range(max(0, min(32, fresh - len(drawn)))))
        self._pool = (self._pool + drawn)[-self._pool_size :]
        pool = list(self._pool)
        finished = [t for t in observed if t.state == TrialState.COMPLETE]
        best = sorted(finished, key=lambda t: -signs[0] * t.values[0])[: self.NEIGHBOURHOODS]
        for trial in best:
            neighbours = self._space.neighbours(dict(trial.params))
            pool.extend(n for n in neighbours if self._space.is_feasible(n, self._limit))
        return pool

    def _key(self, params: dict[str, Any]) -> tuple:
        return tuple(
            round(v, 12) if isinstance(v, float) and not math.isnan(v) else v
            for v in (params[n] for n in self._space.dimensions)
        )
