"""The search: study spec -> space -> sampler -> Ray Tune proxy trials -> Optuna + MLflow -> Pareto set."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from autopeft import keys
from autopeft.errors import SearchAborted
from autopeft.methods.config import TrialConfig
from autopeft.objectives import prior_neg_loss
from autopeft.pareto import hypervolume, mean_metric
from autopeft.results import STATUS_QUO_KEY
from autopeft.study import DONE, BoundStudy, StudySpec, StudyView, fail_stale_trials, open_study, trial_record
from autopeft.timing import DataStatistics, confirmation_units, search_units, unit_seconds
from autopeft.tracking import StudyTracker
from autopeft.training import ProxyRequest
from autopeft.training.data import scored_part, training_and_evaluation

logger = logging.getLogger(__name__)


@dataclass
class SearchSummary:
    """What a search did.

    Attributes:
        bound: the study it ran.
        finished: trials of the study trained to the end.
        pruned: trials of the study stopped early (dominated at a rung).
        failed_now: trials that failed in this run.
        pareto: records of the Pareto set.
        seconds: wall time of this run.
        estimate_seconds: the estimate printed at start.
        fallbacks: trials of the study whose configuration is a random fallback (the sampler's
            model could not be used), with the first one's reason.
        confirmations: confirmation runs of this run (``{"trial", "seed", "metric", ...}`` or with
            ``fail_reason``), see :mod:`autopeft.execution.confirmations`.
        verdict: when nothing beat the status quo, the line that says so (``best`` is then the status quo).
        unconfirmed: trials that ``best`` or ``knee`` pick but that stand on one seed, because the
            confirmation runs ran out (each confirmation moved a pick, or failed); running the same
            command again confirms them.
    """

    bound: BoundStudy
    finished: int
    pruned: int
    failed_now: int
    pareto: list[dict[str, Any]]
    seconds: float
    estimate_seconds: float
    fallbacks: int = 0
    fallback_reason: str | None = None
    confirmations: list[dict[str, Any]] = field(default_factory=list)
    unconfirmed: list[int] = field(default_factory=list)
    verdict: str | None = None


def cpus_per_trial(workers: int) -> int:
    """CPU threads each of ``workers`` concurrent trials gets on this machine (at least one)."""
    return max(1, (os.cpu_count() or 1) // workers)


def prepare_data(bound: BoundStudy, cache_dir: str) -> DataStatistics:
    """Tokenise the training and evaluation data once (into the cache the workers read); return their token statistics.

    Args:
        bound: the study.
        cache_dir: the tokenisation cache folder.
    """
    what = bound.spec.what
    training = what.training
    train, dev = training_and_evaluation(
        bound.task, what.scored_on, what.model, training.max_length, what.data_dir, cache_dir, bound.selection_seed
    )
    train_mean = float(np.mean([len(x) for x in train["input_ids"]]))
    scored = scored_part(dev, training.max_eval_samples)  # what each trial scores, as the trainer cuts it
    n_train = len(train["input_ids"])
    if training.max_train_samples and n_train < training.max_train_samples:
        logger.info("the train split has %d examples, fewer than --max-train-samples", n_train)
    labels = scored["labels"]
    prior = prior_neg_loss(train["labels"], labels, bound.task.is_regression) if len(labels) else None
    return DataStatistics(n_train, train_mean, sum(len(x) for x in scored["input_ids"]), prior)


def search_progress(bound: BoundStudy) -> dict[str, float | None]:
    """Where a search stands: finished trials, the Pareto set's size, its hypervolume and best metric.

    The hypervolume is in the study's own units, up to each objective's worst feasible value (the
    budget's fraction for ``params``, 0 for a metric or sparsity; for ``neg_loss`` minus the loss of
    the uniform prediction, ln of the classes, and on a regression task the worst value a trial
    stored), so successive values compare. ``best_score`` is the best point's first objective,
    ``best_metric`` its task metric (both means over its seeds once confirmed).

    Args:
        bound: the study.
    """
    view = StudyView(bound.study)
    points = view.pareto
    known = bound.known_objectives()
    complete = view.states(TrialState.COMPLETE)
    classes = None if bound.task.is_regression else bound.task.num_labels
    reference = [
        known[i].worst if i in known else o.reference(classes, [t.values[i] for t in complete])
        for i, o in enumerate(bound.objectives)
    ]
    return {
        "finished_trials": len(complete),
        "pareto_size": len(points),
        "hypervolume": hypervolume([values for _, values, _ in points], view.maximize, reference) if points else 0.0,
        "best_score": points[0][1][0] if points else None,
        "best_metric": mean_metric(points[0][0], view.confirmations.get(points[0][0].number))[0] if points else None,
    }


class ProgressLog:
    """What the study's MLflow parent run shows of a search as its trials end: :func:`search_progress`'s metrics
    after every trial; the Pareto plot, ``pareto.csv`` and the Pareto tags only when the Pareto set changed
    (redrawing and re-tagging after every trial made the bookkeeping grow with the trials: O(trials^2)).

    Args:
        bound: the study.
        tracker: its tracker.
    """

    def __init__(self, bound: BoundStudy, tracker: StudyTracker) -> None:
        self.bound = bound
        self.tracker = tracker
        self.shown: tuple | None = None

    def __call__(self) -> None:
        """Log the progress now."""
        import tempfile

        from autopeft.report import collect, plot_pareto

        if not self.tracker.enabled:
            return
        progress = search_progress(self.bound)
        front = tuple((t.number, tuple(values)) for t, values, _ in StudyView(self.bound.study).pareto)
        files = []
        with tempfile.TemporaryDirectory() as scratch:  # each worker draws its own file, logged as pareto.png
            if front != self.shown:
                report = collect(StudyView(self.bound.study), str(self.bound.spec.where.storage))
                files = [plot_pareto(report, Path(scratch) / "pareto.png")]
            self.tracker.log_progress(progress, int(progress["finished_trials"] or 0), files)
        if front != self.shown:
            self.tracker.sync_pareto(self.bound.study)
            self.shown = front


def run_search(
    spec: StudySpec,
    on_start: Callable[[BoundStudy, float], None] | None = None,
    on_trial_end: Callable[[BoundStudy, FrozenTrial], None] | None = None,
    on_confirmation: Callable[[BoundStudy, int, dict[str, Any]], None] | None = None,
    on_event: Callable[[str], None] | None = None,
) -> SearchSummary:
    """Run (or continue) a study until it holds ``spec.how.trials`` trials, its status quo and its confirmations.

    Args:
        spec: the study to run.
        on_start: called once with the bound study and the estimated seconds.
        on_trial_end: called after each trial is stored and tracked.
        on_confirmation: called with ``(bound, trial number, run)`` after each confirmation run.
        on_event: called with each line worth showing (the first rung raised or settled, the status quo's end).
    """
    import torch

    from autopeft.execution import StudySearcher, init_ray, run_with_ray
    from autopeft.execution.confirmations import Confirmations, unconfirmed_picks
    from autopeft.execution.trials import fallback_reason, incomplete_trials

    torch.set_num_threads(1)  # the driver only fits the optimiser's model: leave the cores to trials
    started = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    what, how, runs = spec.what, spec.how, spec.runs
    bound = open_study(spec)
    fail_stale_trials(bound.study)  # trials of a killed run whose heartbeat stopped
    fail_stale_trials(bound.status_quo_study)
    bound.study.sampler = bound.create_sampler()
    say = on_event or (lambda line: None)
    ray_log, timings = runs.run_logs(spec.name)  # one of each per study and run

    name = bound.study.study_name
    tracker = StudyTracker(
        str(spec.where.tracking_uri), name, runs.artifacts, spec.to_dict(), stale_s=how.heartbeat_grace,
        task=spec.what.task, data_dir=spec.what.data_dir,
    )  # fmt: skip
    tracker.sync(bound.study)  # trials that ended while tracking was down, or just before a kill

    data = prepare_data(bound, str(runs.tokenized))
    if data.prior_neg_loss is not None and bound.study.user_attrs.get(keys.PRIOR_NEG_LOSS) != data.prior_neg_loss:
        bound.study.set_user_attr(keys.PRIOR_NEG_LOSS, data.prior_neg_loss)
    threads = cpus_per_trial(how.workers) if not how.ray_address else 1
    finished_before = len(bound.study.get_trials(deepcopy=False, states=DONE))
    remaining = max(0, how.trials - finished_before)
    settings = what.training.settings()

    def make_request(number: int, config: TrialConfig) -> ProxyRequest:
        return ProxyRequest(
            model=what.model,
            task=what.task,
            data_dir=what.data_dir,
            config=config.to_dict(),
            settings=settings,
            seed=how.seed + number,
            threads=threads,
            cache_dir=str(runs.tokenized),
            rungs=(what.rungs.first,),
            rung_score=what.rungs.score,
            scored_on=what.scored_on,
            selection_seed=bound.selection_seed,
            masks_path=str(runs.masks(spec.name) / f"trial-{number}.npz"),
            memory_shape=str(bound.memory.shape) if bound.memory is not None else None,
        )

    log_progress = ProgressLog(bound, tracker)

    def trial_ended(trial: FrozenTrial) -> None:
        tracker.log_trial(trial_record(trial), trial.params, trial.user_attrs.get("train_losses"))
        log_progress()
        if on_trial_end is not None:
            on_trial_end(bound, trial)

    def timed(timing: dict[str, Any]) -> None:  # what the search's own work cost, trial by trial
        timings.parent.mkdir(parents=True, exist_ok=True)
        with timings.open("a") as out:
            out.write(json.dumps(timing) + "\n")

    def status_quo_ended() -> None:
        tracker.sync(bound.study)  # logs the status quo's run beside the trials

    def confirmed(number: int | str, run: dict[str, Any]) -> None:
        if "values" in run:
            record = {**run, "settings": "full"}
            if number == STATUS_QUO_KEY:
                config, name = bound.status_quo.config.to_dict(), "confirm-status-quo"
            else:
                config = bound.study.get_trials(deepcopy=False)[number].user_attrs[keys.CONFIG]
                name = f"confirm-trial-{number}"
            tags = {keys.TAG_TRIAL: str(number)}
            tracker.log_run("confirm", f"{name}-seed{run['seed']}", record, config, tags)
        if on_confirmation is not None:
            on_confirmation(bound, number, run)

    confirmations = Confirmations(bound, make_request, how.confirm, how.workers, confirmed)
    failures_allowed = how.max_failures if how.max_failures is not None else max(5, how.trials // 4)
    searcher = StudySearcher(
        bound, make_request, how.trials, failures_allowed, trial_ended, say, status_quo_ended, timed, confirmations
    )
    owed = searcher.status_quo_owed()
    first = (bound.study.user_attrs.get(keys.FIRST_RUNG) or {}).get("fraction")
    confirming = confirmations.owed()
    confirm = confirmation_units(how.confirm, bound.status_quo.config is not None) if remaining or confirming else 0
    units = search_units(what.rungs, remaining, confirm, owed, first)
    one = unit_seconds(settings, data, bound.info.backbone_params, threads, rungs=len(what.rungs.ladder()) - 1)
    estimate = units * one / how.workers + (20 if remaining or owed else 0)
    if on_start is not None:
        on_start(bound, estimate)
    if remaining or owed or confirming:
        cpus = max(os.cpu_count() or 1, how.workers * threads)
        init_ray(how.ray_address, num_cpus=cpus, num_gpus=None, log_file=ray_log)
        say(f"Ray's own log: {ray_log}")
        try:
            run_with_ray(searcher, runs.ray, name, how.workers, threads, how.gpus_per_trial, data.prior_neg_loss)
        finally:
            searcher.close()
    fail_stale_trials(bound.study)  # left by a killed run less than a grace period ago
    if searcher.failures >= failures_allowed and finished_before + searcher.completed < how.trials:
        tracker.sync(bound.study)
        tracker.finish()
        failed = bound.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        raise SearchAborted(
            f"stopped after {searcher.failures} failed trials (--max-failures {failures_allowed}); "
            f"{finished_before + searcher.completed} of {how.trials} trials finished and are kept; "
            f"last failure: {failed[-1].user_attrs.get(keys.FAIL_REASON, '?')}"
        )
    confirmed_now = confirmations.made
    tracker.sync(bound.study)  # the Pareto tags follow the confirmed means
    tracker.finish()
    seconds = time.perf_counter() - started
    unconfirmed = [t.number for t in unconfirmed_picks(bound)] if confirmed_now else []
    view = StudyView(bound.study)
    best = view.pick("best") if view.states(*DONE) else None
    record = {"trials_run": remaining, "workers": how.workers, "estimate_seconds": estimate, "seconds": seconds}
    record |= {"confirmations": len(confirmed_now), "unconfirmed": unconfirmed, "units_estimated": units}
    record |= {"incomplete_trials": [t.number for t in incomplete_trials(bound)], "status_quo_ran": owed}
    record["verdict"] = best.verdict if best is not None else None
    bound.study.set_user_attr(keys.SEARCH_RUNS, [*view.attrs.get(keys.SEARCH_RUNS, []), record])
    reasons = [r for r in map(fallback_reason, view.trials) if r is not None]
    return SearchSummary(
        bound=bound,
        finished=len(view.states(TrialState.COMPLETE)),
        pruned=len(view.states(TrialState.PRUNED)),
        failed_now=searcher.failures,
        pareto=[trial_record(t) for t in view.pareto_trials],
        seconds=seconds,
        estimate_seconds=estimate,
        fallbacks=len(reasons),
        fallback_reason=reasons[0] if reasons else None,
        confirmations=confirmed_now,
        unconfirmed=unconfirmed,
        verdict=best.verdict if best is not None else None,
    )
