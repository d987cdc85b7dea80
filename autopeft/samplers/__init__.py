"""Optimisers: our multi-objective BO and Optuna's baselines, all respecting the parameter budget."""

from __future__ import annotations

from collections.abc import Callable

import optuna

from autopeft.errors import AutopeftError
from autopeft.samplers._botorch import BoTorchMOSampler
from autopeft.samplers._feasible import FeasibleSampler
from autopeft.space import SearchSpace

__all__ = ["SAMPLERS", "BoTorchMOSampler", "FeasibleSampler", "budget_fraction", "create_sampler", "register_sampler"]

SamplerFactory = Callable[..., optuna.samplers.BaseSampler]
"""``factory(space, limit, seed, known) -> sampler``; ``known`` maps objective indices to exact values."""
SAMPLERS: dict[str, SamplerFactory] = {}


def register_sampler(name: str) -> Callable[[SamplerFactory], SamplerFactory]:
    """Decorator adding a factory ``fn(space, limit, seed, known) -> sampler`` under ``name``."""

    def wrap(factory: SamplerFactory) -> SamplerFactory:
        SAMPLERS[name] = factory
        return factory

    return wrap


@register_sampler("botorch")
def _botorch(space: SearchSpace, limit: int, seed: int | None, known: dict) -> optuna.samplers.BaseSampler:
    return BoTorchMOSampler(space, limit, known=known, seed=seed)


@register_sampler("random")
def _random(space: SearchSpace, limit: int, seed: int | None, known: dict) -> optuna.samplers.BaseSampler:
    return FeasibleSampler(optuna.samplers.RandomSampler(seed=seed), space, limit)


@register_sampler("tpe")
def _tpe(space: SearchSpace, limit: int, seed: int | None, known: dict) -> optuna.samplers.BaseSampler:
    base = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=8)
    return FeasibleSampler(base, space, limit)


@register_sampler("gp")
def _gp(space: SearchSpace, limit: int, seed: int | None, known: dict) -> optuna.samplers.BaseSampler:
    return FeasibleSampler(optuna.samplers.GPSampler(seed=seed, n_startup_trials=8), space, limit)


@register_sampler("nsga2")
def _nsga2(space: SearchSpace, limit: int, seed: int | None, known: dict) -> optuna.samplers.BaseSampler:
    return FeasibleSampler(optuna.samplers.NSGAIISampler(seed=seed, population_size=16), space, limit)


def budget_fraction(space: SearchSpace, limit: int) -> Callable[[dict], float]:
    """The exact ``params`` objective of sampled values, as a fraction of the budget limit.

    Args:
        space: the bound search space.
        limit: the largest allowed trainable-parameter count.
    """
    return lambda params: (space.count_params(params) or 0) / limit


def create_sampler(
    name: str,
    space: SearchSpace,
    limit: int,
    seed: int | None = None,
    known: dict[int, Callable[[dict], float]] | None = None,
) -> optuna.samplers.BaseSampler:
    """Build a registered sampler.

    Args:
        name: ``botorch`` (default), ``random``, ``tpe``, ``nsga2`` or ``gp`` (Optuna's GPSampler).
        space: the bound search space.
        limit: the largest allowed trainable-parameter count.
        seed: random seed.
        known: objective index -> exact value from sampled values (default: objective 1 is the
            trainable count relative to ``limit``, as in a ``metric,params`` study).
    """
    if name not in SAMPLERS:
        raise AutopeftError(f"--sampler {name!r} is unknown; choose one of {', '.join(SAMPLERS)}")
    if known is None:
        known = {1: budget_fraction(space, limit)}
    return SAMPLERS[name](space, limit, seed, known)
