"""Confirm the picks at the end of a search: train ``best`` and ``knee`` again with other seeds, at full fidelity.

A trial's score is one noisy draw (on RTE's selection part, about three points of accuracy), and the
top of a Pareto set is where the lucky draws gather: the best of 24 is overstated. So before a
search ends, the trials that ``best`` and ``knee`` would pick are trained again, same
configuration, same selection split, another seed, and the Pareto set is recomputed on each
trial's mean over its seeds (:func:`autopeft.pareto.pareto_points`). When a confirmation moves the
picks to trials not yet confirmed, those are confirmed in turn, until both picks are confirmed or
the confirmation budget (the spec's ``how.confirm`` runs) is spent. Each run is stored in the study as
it ends (``autopeft.confirm.<trial>``), so an interrupted search resumes its confirmations; its
training seconds count in the search's compute.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from optuna.trial import FrozenTrial

from autopeft import keys
from autopeft.study import BoundStudy, StudyView, trial_config
from autopeft.training import ProxyRequest

CONFIRM_SEED_OFFSET = 1_000_003
"""Confirmation ``k`` of trial ``n`` trains with seed ``spec.seed + n + (k + 1) x offset`` (never a trial's own)."""


def unconfirmed_picks(bound: BoundStudy) -> list[FrozenTrial]:
    """The trials ``best`` and ``knee`` pick now that have no successful confirmation yet.

    Args:
        bound: the study.
    """
    view = StudyView(bound.study)
    picks: dict[int, FrozenTrial] = {}
    for pick in ("best", "knee"):
        trial = view.pick_trial(pick)
        if not any("values" in run for run in view.confirmations.get(trial.number, ())):
            picks.setdefault(trial.number, trial)
    return list(picks.values())


def confirmation_seed(bound: BoundStudy, number: int, done: int) -> int:
    """The seed of trial ``number``'s next confirmation, after ``done`` earlier ones."""
    return bound.spec.how.seed + number + (done + 1) * CONFIRM_SEED_OFFSET


def confirm_picks(
    bound: BoundStudy,
    make_request: Callable[[int, Any], ProxyRequest],
    max_runs: int,
    workers: int,
    resources: dict[str, float],
    on_run: Callable[[int, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Confirm the picks with Ray tasks (``workers`` at a time), storing each run as it ends.

    A run that fails is stored with its reason and counted against ``max_runs`` (the trial stays
    unconfirmed and may be tried again while runs remain).

    Args:
        bound: the study (with at least one finished trial).
        make_request: builds a trial's request (as the search's trials are built).
        max_runs: confirmation runs this call may start.
        workers: runs at the same time.
        resources: Ray resources of one run (``{"num_cpus": 1, "num_gpus": 0}``).
        on_run: called with ``(trial number, stored run)`` after each run.

    Returns:
        The runs stored by this call.
    """
    import ray
    from ray.exceptions import RayError

    from autopeft.training import run_proxy_trial

    train = ray.remote(run_proxy_trial).options(**resources)
    made: list[dict[str, Any]] = []
    while len(made) < max_runs:
        targets = unconfirmed_picks(bound)[: min(workers, max_runs - len(made))]
        if not targets:
            break
        bound.study.set_user_attr(keys.CONFIRMING, [t.number for t in targets])  # in flight: status shows it
        pending = {}
        for trial in targets:
            done = len(StudyView(bound.study).confirmations.get(trial.number, []))
            request = make_request(trial.number, trial_config(trial))
            seed = confirmation_seed(bound, trial.number, done)
            request = dataclasses.replace(request, seed=seed, rungs=(), masks_path=None)
            pending[train.remote(request)] = (trial, seed)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            trial, seed = pending.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except RayError as exc:  # the run failed: stored with its reason, the search goes on
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
                run = {"seed": seed, "fail_reason": first}
            else:
                config = trial_config(trial)
                run = {
                    "seed": seed,
                    "values": bound.objective_values(config, result),
                    "metric": result["metric"],
                    "train_seconds": result["train_seconds"],
                    "seconds": result["seconds"],
                    "threads": result["threads"],
                    "train_tokens": result["train_tokens"],
                }
            runs = StudyView(bound.study).confirmations.get(trial.number, [])
            bound.study.set_user_attr(f"{keys.CONFIRM_PREFIX}{trial.number}", [*runs, run])
            made.append({"trial": trial.number, **run})
            if on_run is not None:
                on_run(trial.number, run)
        bound.study.set_user_attr(keys.CONFIRMING, [])
    return made
