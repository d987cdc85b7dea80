"""Optimisers: our multi-objective BO and Optuna's baselines, all respecting the parameter budget."""

from __future__ import annotations

from collections.abc import Callable

import optuna

from autopeft.errors import AutopeftError
from autopeft.samplers._botorch import BoTorchMOSampler, KnownObjective, Observation
from autopeft.samplers._feasible import FeasibleSampler
from autopeft.samplers._proposals import Proposal, ProposalLog
from autopeft.space import SearchSpace

__all__ = [
    "SAMPLERS",
    "BoTorchMOSampler",
    "FeasibleSampler",
    "KnownObjective",
    "Observation",
    "Proposal",
    "ProposalLog",
    "create_sampler",
    "register_sampler",
]

SamplerFactory = Callable[..., optuna.samplers.BaseSampler]
"""``factory(space, limit, seed, known, observe) -> sampler``; ``known`` maps objective indices to
:class:`KnownObjective`, ``observe`` gives what a model may learn of a trial (an :class:`Observation`: its
measured objectives' values and the fidelity they were measured at, or ``None``)."""
SAMPLERS: dict[str, SamplerFactory] = {}


def register_sampler(name: str) -> Callable[[SamplerFactory], SamplerFactory]:
    """Decorator adding a factory ``fn(space, limit, seed, known) -> sampler`` under ``name``."""

    def wrap(factory: SamplerFactory) -> SamplerFactory:
        SAMPLERS[name] = factory
        return factory

    return wrap


@register_sampler("botorch")
def _botorch(
    space: SearchSpace, limit: int, seed: int | None, known: dict, observe=None, start_load: float = 0.0
) -> optuna.samplers.BaseSampler:
    return BoTorchMOSampler(space, limit, known=known, observe=observe, seed=seed, start_load=start_load)


@register_sampler("random")
def _random(space: SearchSpace, limit: int, seed: int | None, known: dict, observe=None) -> optuna.samplers.BaseSampler:
    return FeasibleSampler(optuna.samplers.RandomSampler(seed=seed), space, limit, "random")


@register_sampler("tpe")
def _tpe(space: SearchSpace, limit: int, seed: int | None, known: dict, observe=None) -> optuna.samplers.BaseSampler:
    base = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=8)
    return FeasibleSampler(base, space, limit, "tpe")


@register_sampler("gp")
def _gp(space: SearchSpace, limit: int, seed: int | None, known: dict, observe=None) -> optuna.samplers.BaseSampler:
    return FeasibleSampler(optuna.samplers.GPSampler(seed=seed, n_startup_trials=8), space, limit, "gp")


@register_sampler("nsga2")
def _nsga2(space: SearchSpace, limit: int, seed: int | None, known: dict, observe=None) -> optuna.samplers.BaseSampler:
    return FeasibleSampler(optuna.samplers.NSGAIISampler(seed=seed, population_size=16), space, limit, "nsga2")


def create_sampler(
    name: str,
    space: SearchSpace,
    limit: int,
    seed: int | None,
    known: dict[int, KnownObjective],
    observe: Callable[[optuna.trial.FrozenTrial], Observation | None] | None = None,
    start_load: float = 0.0,
) -> optuna.samplers.BaseSampler:
    """Build a registered sampler.

    Args:
        name: ``botorch`` (default), ``random``, ``tpe``, ``nsga2`` or ``gp`` (Optuna's GPSampler).
        space: the bound search space.
        limit: the largest allowed trainable-parameter count.
        seed: random seed.
        known: objective index -> the objective's exact value from sampled values, in the units
            the study stores (``BoundStudy.known_objectives`` gives them for a study).
        observe: what a model may learn of a trial: its measured objectives' values at the highest fidelity it
            reached (``BoundStudy.observed_values``); Optuna's own samplers read the stored values of finished
            trials instead.
        start_load: ``botorch`` only: the least share of the budget its quasi-random start fills.
    """
    if name not in SAMPLERS:
        raise AutopeftError(f"--sampler {name!r} is unknown; choose one of {', '.join(SAMPLERS)}")
    if start_load:
        if name != "botorch":
            raise AutopeftError(f"--start-load is botorch's quasi-random start; --sampler {name} has none")
        return SAMPLERS[name](space, limit, seed, known, observe, start_load=start_load)
    return SAMPLERS[name](space, limit, seed, known, observe)
