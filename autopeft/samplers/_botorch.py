"""Multi-objective Bayesian optimisation for PEFT spaces, as an Optuna sampler.

Some objectives are known exactly before training: the trainable-parameter fraction of a proposal
is computed from its values by the same function that gives the value the study stores. Only the
others (the task metric) get a GP. qLogNEHVI (BoTorch) scores candidates with an objective that
reads each known value from the candidate itself (extra input columns), so the hypervolume
improvement of the parameter axis is exact. The reference point comes from BoTorch's
``infer_reference_point`` in the same units, capped at each known objective's worst feasible
value (the budget). Candidates come from a pool of feasible configurations (random, repaired to
the budget, plus one-change neighbours of the best trials), so over-budget points are never
proposed and categorical choices stay discrete; unordered choices reach the GP one-hot.
Running trials enter as pending points, so parallel workers receive different proposals.

Configurations are compared as they train (``SearchSpace.canonical``): values that differ only in
dimensions without effect (the rank of a module type that is off) are one point to the GP and one
configuration to the pool, so the search never spends a trial on a configuration it has already
measured (re-measuring the picks is the confirmations' job), and proposals are stored canonical.

The model learns each trial at the highest fidelity it has reached (:class:`Observation`: what
a search's successive halving scored at its last rung so far, or at the end), with that fidelity (the
fraction of the full schedule) as one more input column; candidates and the hypervolume's baseline are
scored at fidelity 1, full training. So a configuration that led at the first rung and fell behind at
the end is modelled by its end. Failed and running trials, and those stopped at a rung, are never
proposed again. A proposal falls back to a random feasible one only when the model cannot be
fitted or evaluated (numerical errors); the fallback is recorded with its reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from autopeft.samplers._proposals import Proposal, ProposalLog
from autopeft.space import SearchSpace
from autopeft.space.space import CACHE_ENTRIES, LruCache

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnownObjective:
    """An objective whose value is exact before training.

    Attributes:
        value: sampled values -> the objective's value, in the units and direction the study stores.
        worst: the worst value any feasible configuration can have (the budget's fraction for
            ``params``), used to cap the hypervolume's reference point; ``None`` when unbounded.
    """

    value: Callable[[dict[str, Any]], float]
    worst: float | None = None


@dataclass(frozen=True)
class Observation:
    """What the model learns of one trial.

    Attributes:
        values: its measured objectives' values, in the study's order and units.
        fidelity: the fraction of the full training schedule at which they were measured (1: the end).
    """

    values: list[float]
    fidelity: float = 1.0


def _model_errors() -> tuple[type[BaseException], ...]:
    """Exceptions of fitting or evaluating a GP that justify a random proposal (numerical trouble only)."""
    from botorch.exceptions.errors import ModelFittingError
    from linear_operator.utils.errors import NanError, NotPSDError

    return (ModelFittingError, NotPSDError, NanError, torch.linalg.LinAlgError)


class BoTorchMOSampler(ProposalLog, BaseSampler):
    """qLogNEHVI over a feasible candidate pool, after a scrambled-Sobol start.

    Args:
        space: the bound search space.
        limit: the largest allowed trainable-parameter count.
        known: objective index -> its exact value from sampled values; the other objective (the first, the
            score) is modelled.
        observe: what the model learns of a trial (``None`` while there is nothing to learn: the trial is
            pending while it runs); default: the stored values of a finished trial, at fidelity 1. A search
            passes each trial's scores at the highest rung it has reached (``Binding.observed_values``).
        n_startup_trials: quasi-random (Sobol, repaired to the budget) trials before the GP is used.
        start_load: the least share of the budget (:meth:`SearchSpace.budget_load` over ``limit``) a start
            trial's configuration fills: Sobol points below it are passed over (0: none is).
        pool_size: random feasible candidates scored per suggestion.
        seed: random seed.
    """

    def __init__(
        self,
        space: SearchSpace,
        limit: int,
        known: dict[int, KnownObjective] | None = None,
        observe: Callable[[FrozenTrial], list[float] | None] | None = None,
        n_startup_trials: int = 8,
        pool_size: int = 256,
        seed: int | None = None,
        start_load: float = 0.0,
    ) -> None:
        self._space = space
        self._limit = limit
        self._known = dict(known or {})
        self._observe: Callable[[FrozenTrial], Observation | None] | None = observe
        self._n_obj = 0
        self._n_startup = n_startup_trials
        self._start_load = start_load
        self._pool_size = pool_size
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._hyperparameters: dict[str, torch.Tensor] | None = None
        self._feature_cache = LruCache(CACHE_ENTRIES)
        self._pool: list[dict[str, Any]] = []
        self._trial_keys: dict[int, tuple] = {}

    MC_SAMPLES = 32
    """Quasi-Monte-Carlo samples of the posterior per acquisition value (BoTorch's default is 128;
    scoring the pool is most of a suggestion's time, and it grows with this)."""
    PRUNE_SAMPLES = 256
    """Posterior samples that decide which baseline points may still be Pareto-optimal."""
    NEIGHBOURHOODS = 3
    """Best trials whose one-change neighbours join the candidate pool."""
    RANGE_STEP = 0.1
    """A neighbour's move along a range dimension (learning rate, dropout), in fractions of its (log-)width."""

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
        self._n_obj = len(study.directions)
        if self._observe is None:
            modelled = [i for i in range(self._n_obj) if i not in self._known]
            self._observe = lambda t: (
                Observation([t.values[i] for i in modelled]) if t.state == TrialState.COMPLETE else None
            )
        trials = [
            t for t in study.get_trials(deepcopy=False) if t.number != trial.number and self._space.covers(t.params)
        ]
        observations = {t.number: o for t in trials if t.state != TrialState.FAIL and (o := self._observe(t))}
        observed = [t for t in trials if t.number in observations]
        pending = [t for t in trials if t.state == TrialState.RUNNING and t.number not in observations]
        seen = {self._key_of(t) for t in trials if not t.user_attrs.get("withdrawn")}
        if len(observed) < self._n_startup:
            values, proposal = self._sobol(trial.number, seen), Proposal("sobol")
        else:
            try:
                learnt = [observations[t.number] for t in observed]
                values, proposal = self._bayes(study, observed, learnt, pending, seen)
            except _model_errors() as exc:
                reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
                values, proposal = self._random_feasible(seen), Proposal("fallback", reason)
        self._record(trial.number, proposal)
        return self._space.canonical(values)

    # -- proposals -----------------------------------------------------------------------------
    def _values(self, trial: FrozenTrial, observation: Observation) -> list[float]:
        """What the model learns from an observed trial: its measured objectives as observed, the known ones exact."""
        observed = iter(observation.values)
        return [self._known[i].value(trial.params) if i in self._known else next(observed) for i in range(self._n_obj)]

    def _key_of(self, trial: FrozenTrial) -> tuple:
        """The configuration key of a trial (its values never change once asked: cached by number)."""
        key = self._trial_keys.get(trial.number)
        if key is None:
            key = self._trial_keys[trial.number] = self._space.key(trial.params)
        return key

    def _sobol(self, index: int, seen: set[tuple]) -> dict[str, Any]:
        """Point ``index`` of the scrambled Sobol sequence, repaired; the next unseen one if taken, or if it
        fills less than ``start_load`` of the budget (after 64 draws, the fullest unseen one drawn)."""
        engine = torch.quasirandom.SobolEngine(len(self._space.dimensions), scramble=True, seed=self._seed or 0)
        engine.fast_forward(index)
        fullest: tuple[float, dict[str, Any]] | None = None
        values: dict[str, Any] = {}
        for _ in range(64):
            values = self._space.repair(self._space.from_units(engine.draw(1)[0].tolist()), self._limit)
            if self._space.key(values) in seen:
                continue
            load = self._space.budget_load(values, self._limit) / self._limit
            if load >= self._start_load:
                return values
            if fullest is None or load > fullest[0]:
                fullest = (load, values)
        return fullest[1] if fullest is not None else values

    def _random_feasible(self, seen: set[tuple] = frozenset()) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for _ in range(64):
            values = self._space.repair(self._space.sample(self._rng), self._limit)
            if self._space.key(values) not in seen:
                break
        return values

    def _features(self, params: dict[str, Any]) -> np.ndarray:
        """The space's model encoding of the values, then the known objectives' exact values (last columns)."""
        key = self._space.key(params)
        cached = self._feature_cache.get(key)
        if cached is None:
            cached = np.append(self._space.features(params), [known.value(params) for known in self._known.values()])
            self._feature_cache[key] = cached
        return cached

    def reference_point(self, y: torch.Tensor, signs: list[float]) -> torch.Tensor:
        """The hypervolume reference point of observed values ``y`` (all maximised), BoTorch's rule.

        Args:
            y: ``n x m`` objective values, each multiplied by its sign so that larger is better.
            signs: per objective, +1 when the study maximises it, -1 when it minimises it.
        """
        from botorch.utils.multi_objective.hypervolume import infer_reference_point
        from botorch.utils.multi_objective.pareto import is_non_dominated

        cap = torch.full((y.shape[-1],), float("nan"), dtype=y.dtype)
        for i, known in self._known.items():
            if known.worst is not None:
                cap[i] = signs[i] * known.worst
        return infer_reference_point(y[is_non_dominated(y)], max_ref_point=cap if not cap.isnan().all() else None)

    def _bayes(
        self,
        study: Study,
        observed: list[FrozenTrial],
        observations: list[Observation],
        pending: list[FrozenTrial],
        seen: set[tuple],
    ) -> tuple[dict[str, Any], Proposal]:
        from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
        from botorch.acquisition.multi_objective.objective import GenericMCMultiOutputObjective
        from botorch.acquisition.multi_objective.utils import prune_inferior_points_multi_objective
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import SingleTaskGP
        from botorch.models.transforms.input import Normalize
        from botorch.models.transforms.outcome import Standardize
        from botorch.sampling import SobolQMCNormalSampler
        from gpytorch.mlls import ExactMarginalLogLikelihood

        n_obj = len(study.directions)
        signs = [1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in study.directions]
        modelled = [i for i in range(n_obj) if i not in self._known]
        known = list(self._known)

        rows = [self._values(t, o) for t, o in zip(observed, observations, strict=True)]
        pool = [c for c in self._candidates(observed, rows, signs) if self._space.key(c) not in seen]
        if not pool:
            return self._random_feasible(seen), Proposal("fallback", "no unseen feasible candidate in the pool")
        # The first column is the fidelity: as observed for the trials, 1 (full training) for what is predicted.
        fidelities = [[o.fidelity] for o in observations]
        x_train = torch.tensor(np.hstack([fidelities, [self._features(t.params) for t in observed]])).double()
        x_pool = torch.tensor(np.stack([np.append(1.0, self._features(c)) for c in pool]), dtype=torch.double)
        x_full = x_train.clone()
        x_full[:, 0] = 1.0
        width = x_train.shape[-1] - len(known)
        y_all = torch.tensor([[s * v for s, v in zip(signs, row, strict=True)] for row in rows]).double()

        # Encoded columns lie in [0, 1]; the known objectives' columns are scaled over the points in play.
        both = torch.cat([x_train, x_pool])
        bounds = torch.stack([torch.zeros(both.shape[-1]), torch.ones(both.shape[-1])]).double()
        low, high = both[:, width:].min(dim=0).values, both[:, width:].max(dim=0).values
        bounds[0, width:], bounds[1, width:] = low, torch.where(high > low, high, low + 1.0)
        gp = SingleTaskGP(
            x_train,
            y_all[:, modelled],
            input_transform=Normalize(d=x_train.shape[-1], bounds=bounds),
            outcome_transform=Standardize(m=len(modelled)),
        )
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

        x_pending = None
        if pending:
            x_pending = torch.tensor(np.stack([np.append(1.0, self._features(t.params)) for t in pending])).double()
        objective = GenericMCMultiOutputObjective(objectives)
        ref_point = self.reference_point(y_all, signs)
        # The measured configurations, predicted at full training (as candidates are). Those almost surely
        # dominated add cost, not information (BoTorch's pruning, with fewer posterior samples than its
        # default 2048: its Pareto loop dominated the time).
        with torch.random.fork_rng():
            torch.manual_seed(len(observed))
            x_baseline = prune_inferior_points_multi_objective(
                gp, x_full, ref_point, objective=objective, num_samples=self.PRUNE_SAMPLES
            )
        acqf = qLogNoisyExpectedHypervolumeImprovement(
            model=gp,
            ref_point=ref_point.tolist(),
            X_baseline=x_baseline,
            sampler=SobolQMCNormalSampler(sample_shape=torch.Size([self.MC_SAMPLES]), seed=len(observed)),
            objective=objective,
            X_pending=x_pending,
        )
        with torch.no_grad():
            scores = torch.cat([acqf(chunk.unsqueeze(-2)) for chunk in x_pool.split(256)])
        if not torch.isfinite(scores).any():
            raise torch.linalg.LinAlgError("the acquisition function is not finite on any candidate")
        return pool[int(torch.nan_to_num(scores, nan=-torch.inf).argmax())], Proposal("bayes")

    def _candidates(
        self, observed: list[FrozenTrial], rows: list[list[float]], signs: list[float]
    ) -> list[dict[str, Any]]:
        """Random feasible values, and the feasible one-change neighbours of the best trials.

        Random values (:meth:`SearchSpace.sample`: how many layers and module types are on is uniform, so
        sparse placements and every-layer ones alike) are kept when feasible; repair, which is costlier,
        only tops the pool up.
        The random part is kept between suggestions and a quarter of it is renewed each time.
        """
        fresh = self._pool_size if not self._pool else self._pool_size // 4
        drawn = []
        for _ in range(4 * fresh):
            values = self._space.sample(self._rng)
            if self._space.is_feasible(values, self._limit):
                drawn.append(values)
                if len(drawn) == fresh:
                    break
        drawn.extend(self._random_feasible() for _ in range(max(0, min(32, fresh - len(drawn)))))
        self._pool = (self._pool + drawn)[-self._pool_size :]
        pool = list(self._pool)
        ranked = sorted(zip(observed, rows, strict=True), key=lambda pair: -signs[0] * pair[1][0])
        for trial, _ in ranked[: self.NEIGHBOURHOODS]:
            neighbours = self._space.neighbours(self._space.canonical(trial.params), range_step=self.RANGE_STEP)
            pool.extend(n for n in neighbours if self._space.is_feasible(n, self._limit))
        return pool
