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

The status quo is confirmed alongside, on as many seeds as the trial ``best`` picks has
(``autopeft.confirm.status_quo``), so that ``best`` is weighed against the status quo mean for mean: a
pick's mean over two seeds against one draw of the status quo let a single lucky or unlucky draw of the
status quo decide. Its runs come on top of ``how.confirm`` (at most as many).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from optuna.trial import FrozenTrial

from autopeft import keys
from autopeft.pareto import mean_metric
from autopeft.results import STATUS_QUO_KEY
from autopeft.study import BoundStudy, StudyView, trial_config
from autopeft.training import ProxyRequest

CONFIRM_SEED_OFFSET = 1_000_003
"""Confirmation ``k`` of trial ``n`` trains with seed ``spec.seed + n + (k + 1) x offset`` (never a trial's own);
the status quo's with ``spec.seed + (k + 1) x offset - 1``."""


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


def status_quo_behind(bound: BoundStudy, in_flight: list[FrozenTrial] | tuple = ()) -> bool:
    """Whether the status quo has fewer seeds than the trial ``best`` picks (counting a confirmation of that
    trial in flight), so that it is owed a confirmation.

    Args:
        bound: the study.
        in_flight: trials whose confirmation is about to run.
    """
    view = StudyView(bound.study)
    if view.status_quo is None or not view.pareto:
        return False
    best = view.pick_trial("best")
    _, best_seeds = mean_metric(best, view.confirmations.get(best.number))
    _, quo_seeds = view.status_quo_metric()
    return quo_seeds < best_seeds + any(t.number == best.number for t in in_flight)


def confirmation_seed(bound: BoundStudy, number: int, done: int) -> int:
    """The seed of trial ``number``'s (``-1``: the status quo's) next confirmation, after ``done`` earlier ones."""
    return bound.spec.how.seed + number + (done + 1) * CONFIRM_SEED_OFFSET


def confirm_picks(
    bound: BoundStudy,
    make_request: Callable[[int, Any], ProxyRequest],
    max_runs: int,
    workers: int,
    resources: dict[str, float],
    on_run: Callable[[int, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Confirm the picks, and the status quo on as many seeds as ``best``, with Ray tasks (``workers`` trials
    and the status quo at a time), storing each run as it ends.

    A run that fails is stored with its reason and counted against the budget (the trial stays
    unconfirmed and may be tried again while runs remain).

    Args:
        bound: the study (with at least one finished trial).
        make_request: builds a trial's request (as the search's trials are built; ``-1`` for the status quo).
        max_runs: the trials' confirmation runs this call may start (the status quo's as many again, at most).
        workers: trials' runs at the same time.
        resources: Ray resources of one run (``{"num_cpus": 1, "num_gpus": 0}``).
        on_run: called with ``(trial number or "status_quo", stored run)`` after each run.

    Returns:
        The runs stored by this call.
    """
    import ray
    from ray.exceptions import RayError

    from autopeft.training import run_proxy_trial

    train = ray.remote(run_proxy_trial).options(**resources)
    made: list[dict[str, Any]] = []
    trial_runs = quo_runs = 0
    while True:
        targets = unconfirmed_picks(bound)[: max(0, min(workers, max_runs - trial_runs))]
        quo = quo_runs < max_runs and status_quo_behind(bound, targets)
        entries: list[tuple[int | str, Any]] = [(t.number, trial_config(t)) for t in targets]
        entries += [(STATUS_QUO_KEY, bound.status_quo.config)] if quo else []
        if not entries:
            break
        trial_runs, quo_runs = trial_runs + len(targets), quo_runs + int(quo)
        bound.study.set_user_attr(keys.CONFIRMING, [key for key, _ in entries])  # in flight: status shows it
        pending = {}
        for key, config in entries:
            done = len(StudyView(bound.study).confirmations.get(key, []))
            number = -1 if key == STATUS_QUO_KEY else int(key)  # how requests and seeds name the status quo
            request = make_request(number, config)
            seed = confirmation_seed(bound, number, done)
            request = dataclasses.replace(request, seed=seed, rungs=(), masks_path=None)
            pending[train.remote(request)] = (key, config, seed)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            key, config, seed = pending.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except RayError as exc:  # the run failed: stored with its reason, the search goes on
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
                run = {"seed": seed, "fail_reason": first}
            else:
                run = {
                    "seed": seed,
                    "values": bound.objective_values(config, result),
                    "metric": result["metric"],
                    "train_seconds": result["train_seconds"],
                    "seconds": result["seconds"],
                    "threads": result["threads"],
                    "train_tokens": result["train_tokens"],
                }
            runs = StudyView(bound.study).confirmations.get(key, [])
            bound.study.set_user_attr(f"{keys.CONFIRM_PREFIX}{key}", [*runs, run])
            made.append({"trial": key, **run})
            if on_run is not None:
                on_run(key, run)
        bound.study.set_user_attr(keys.CONFIRMING, [])
    return made
