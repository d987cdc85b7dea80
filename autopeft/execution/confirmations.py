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

from optuna.trial import FrozenTrial, TrialState

from autopeft import keys
from autopeft.execution.trials import gathered, objective_values
from autopeft.pareto import mean_metric
from autopeft.results import STATUS_QUO_KEY
from autopeft.study import DONE, BoundStudy, StudyView, trial_config
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


@dataclasses.dataclass(frozen=True)
class ConfirmationRun:
    """One confirmation run to train.

    Attributes:
        key: the confirmed trial's number, or ``STATUS_QUO_KEY``.
        config: its configuration.
        seed: the run's seed.
        request: the worker's request (full fidelity: no rungs).
    """

    key: int | str
    config: Any
    seed: int
    request: ProxyRequest


class Confirmations:
    """The confirmations of one search run, round by round, whatever runs them (the search runs them on Ray
    Tune's workers, after the trials and on the same reused processes).

    A round holds the picks not yet confirmed (at most ``workers`` of them and what the budget leaves) and the
    status quo when it is behind ``best``; the next round is planned once every run of the last one is stored,
    since each run moves the means the picks are made on. A run that fails is stored with its reason and
    counted against the budget (the trial stays unconfirmed and may be tried again while runs remain).

    Args:
        bound: the study.
        make_request: builds a trial's request (as the search's trials are built; ``-1`` for the status quo).
        max_runs: the trials' confirmation runs this search run may start (the status quo's as many again, at
            most).
        workers: trials' runs in one round.
        on_run: called with ``(trial number or STATUS_QUO_KEY, stored run)`` after each run is stored.
    """

    def __init__(
        self,
        bound: BoundStudy,
        make_request: Callable[[int, Any], ProxyRequest],
        max_runs: int,
        workers: int,
        on_run: Callable[[int | str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.bound = bound
        self.make_request = make_request
        self.max_runs = max_runs
        self.workers = workers
        self.on_run = on_run or (lambda key, run: None)
        self.made: list[dict[str, Any]] = []
        """The runs stored by this search run, ``{"trial": key, **run}``."""
        self._trial_runs = self._quo_runs = 0

    def owed(self) -> bool:
        """Whether confirmations are due: the study holds its trials, one of them trained to the end, and a pick
        has no confirmation or the status quo is behind ``best``."""
        done = self.bound.study.get_trials(deepcopy=False, states=DONE)
        if not self.max_runs or len(done) < self.bound.spec.how.trials:
            return False
        if not any(t.state == TrialState.COMPLETE for t in done):
            return False
        return bool(unconfirmed_picks(self.bound)) or status_quo_behind(self.bound)

    def next_round(self) -> list[ConfirmationRun]:
        """The next round's runs, marked in flight in the study (``status`` shows them); none when the picks are
        confirmed or the budget is spent (then nothing is marked in flight any more).

        Call it only when every run of the last round is stored.
        """
        if not self._trial_runs and not self._quo_runs and not self.owed():
            return self._done()
        budget = max(0, min(self.workers, self.max_runs - self._trial_runs))
        targets = unconfirmed_picks(self.bound)[:budget]
        quo = self._quo_runs < self.max_runs and status_quo_behind(self.bound, targets)
        entries: list[tuple[int | str, Any]] = [(t.number, trial_config(t)) for t in targets]
        entries += [(STATUS_QUO_KEY, self.bound.status_quo.config)] if quo else []
        if not entries:
            return self._done()
        self._trial_runs, self._quo_runs = self._trial_runs + len(targets), self._quo_runs + int(quo)
        self.bound.study.set_user_attr(keys.CONFIRMING, [key for key, _ in entries])
        confirmations = StudyView(self.bound.study).confirmations
        runs = []
        for key, config in entries:
            number = -1 if key == STATUS_QUO_KEY else int(key)  # how requests and seeds name the status quo
            seed = confirmation_seed(self.bound, number, len(confirmations.get(key, [])))
            request = dataclasses.replace(self.make_request(number, config), seed=seed, rungs=(), masks_path=None)
            runs.append(ConfirmationRun(key, config, seed, request))
        return runs

    def _done(self) -> list[ConfirmationRun]:
        if self.bound.study.user_attrs.get(keys.CONFIRMING):
            self.bound.study.set_user_attr(keys.CONFIRMING, [])
        return []

    def record(self, run: ConfirmationRun, result: dict[str, Any] | None) -> dict[str, Any]:
        """Store a run as it ends, and return what was stored.

        Args:
            run: the run.
            result: its training's result as the worker reported it (``None`` or ``failed`` when it failed).
        """
        values, reason = None, None
        if result is None or result.get("failed"):
            reason = (result or {}).get("fail_reason") or "the worker process running it died"
        else:
            result = gathered(result)
            values, reason = objective_values(self.bound, run.config, result)
        if reason is not None:
            stored: dict[str, Any] = {"seed": run.seed, "fail_reason": reason[:300]}
        else:
            stored = {
                "seed": run.seed,
                "values": values,
                **{key: result[key] for key in ("metric", "train_seconds", "seconds", "threads", "train_tokens")},
            }
        runs = StudyView(self.bound.study).confirmations.get(run.key, [])
        self.bound.study.set_user_attr(f"{keys.CONFIRM_PREFIX}{run.key}", [*runs, stored])
        self.made.append({"trial": run.key, **stored})
        self.on_run(run.key, stored)
        return stored
