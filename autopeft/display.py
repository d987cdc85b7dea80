"""Showing results in the terminal: the live search display and the Pareto/trials tables."""

from __future__ import annotations

import datetime
import statistics
import time

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from autopeft.execution.trials import fallback_reason
from autopeft.methods.build import describe
from autopeft.pareto import confirmation_runs, mean_metric, mean_values, pareto_points, score_name
from autopeft.study import SPLIT_LABELS, BoundStudy, confirmation_rounds, mask_url, scored_on, trial_record


def pareto_table(study: optuna.Study, title: str) -> Table:
    """A table of the study's Pareto set, best score first (the first objective, what selects).

    Args:
        study: the study.
        title: the table's title.
    """
    from autopeft.results import validation_results

    split = scored_on(study)
    table = Table(title=title, caption=f"metric: on the {SPLIT_LABELS[split]}", title_justify="left")
    sparse = "sparsity" in study.user_attrs.get("autopeft.objectives", [])
    validation = validation_results(study)
    points = pareto_points(study)
    front = [trial for trial, _, _ in points]
    retrained = any(t.number in validation for t in front)
    confirmed = any(seeds > 1 for _, _, seeds in points)
    confirmations = confirmation_runs(study)
    score = score_name(study)
    own_score = score != "metric"  # the study selects on another score than the metric: show both
    columns = (
        "trial",
        *((f"{score} ({split}, selects)",) if own_score else ()),
        f"metric ({split})",
        *((f"mean over seeds ({split})",) if confirmed else ()),
        *(("validation (retrained)",) if retrained else ()),
        "trainable",
        "% of backbone",
        *(("sparsity",) if sparse else ()),
        "configuration",
    )
    for column in columns:
        table.add_column(column, justify="right" if column != "configuration" else "left")
    for trial, values, seeds in points:
        record = trial_record(trial, validation.get(trial.number))
        metric_mean, _ = mean_metric(trial, confirmations.get(trial.number)) if seeds > 1 else (None, 1)
        mean = (f"{metric_mean:.4f} (n={seeds})" if seeds > 1 else "",) if confirmed else ()
        scored = (f"{values[0]:.4f}" + (f" (mean, n={seeds})" if seeds > 1 else ""),) if own_score else ()
        sparsity = (f"{record.get('sparsity') or 0:.3f}",) if sparse else ()
        found = record.get("validation")
        text = f"{found['mean']:.4f} ± {found['std']:.4f} (n={found['seeds']})" if found else ""
        shown = (text,) if retrained else ()
        table.add_row(
            str(record["trial"]),
            *scored,
            f"{record['metric']:.4f}",
            *mean,
            *shown,
            f"{record['trainable_params']:,}",
            f"{100 * record['trainable_fraction']:.3f}",
            *sparsity,
            describe(record["params"]),
        )
    return table


def print_pareto(console: Console, study: optuna.Study, title: str) -> None:
    """Print the Pareto table."""
    console.print(pareto_table(study, title))


def print_trials(console: Console, study: optuna.Study) -> None:
    """Print every trial of a study."""
    table = Table(title=f"Trials of {study.study_name}", title_justify="left")
    for column in ("trial", "state", "metric", "trainable", "% of backbone", "configuration / failure"):
        table.add_column(column, justify="left" if column in ("state", "configuration / failure") else "right")
    for trial in study.get_trials(deepcopy=False):
        record = trial_record(trial)
        metric = f"{record['metric']:.4f}" if record["metric"] is not None else ""
        count = f"{record['trainable_params']:,}" if record["trainable_params"] is not None else ""
        fraction = f"{100 * record['trainable_fraction']:.3f}" if record["trainable_fraction"] is not None else ""
        table.add_row(
            str(record["trial"]),
            record["state"],
            metric,
            count,
            fraction,
            record.get("fail_reason") or describe(record["params"]),
        )
    console.print(table)


def seconds_left(
    study: optuna.Study, target: int, workers: int, per_trial: float | None = None, tail_rounds: int = 0
) -> float | None:
    """Seconds until a study holds ``target`` done trials and its confirmations: trials left x seconds
    per trial / workers, plus the rounds of confirmation runs.

    ``left = (trials left x median trial seconds - time already spent by the trials in flight) /
    workers + tail_rounds x median trial seconds``; a trial's seconds run from its start to its end
    in the storage (Ray's scheduling and evaluation included). ``None`` until a trial has ended
    (unless ``per_trial`` is given).

    Args:
        study: the study.
        target: done (finished or stopped early) trials it should hold.
        workers: trials run at the same time.
        per_trial: seconds per trial (default: the median of the study's done trials).
        tail_rounds: rounds of training after the trials (:func:`~autopeft.study.confirmation_rounds`).
    """
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    trials = study.get_trials(deepcopy=False, states=states)
    if per_trial is None:
        durations = [
            (t.datetime_complete - t.datetime_start).total_seconds()
            for t in trials
            if t.state != TrialState.RUNNING and t.datetime_start and t.datetime_complete
        ]
        if not durations:
            return None
        per_trial = statistics.median(durations)
    done = sum(t.state != TrialState.RUNNING for t in trials)
    now = datetime.datetime.now()
    spent = sum(
        min(per_trial, (now - t.datetime_start).total_seconds())
        for t in trials
        if t.state == TrialState.RUNNING and t.datetime_start
    )
    return max(0.0, (max(0, target - done) * per_trial - spent) / max(1, workers)) + tail_rounds * per_trial


class TrialsEta(ProgressColumn):
    """Time left in a search, from the trials as they end: trials left x seconds per trial / workers.

    Until the first trial ends it counts the start-up estimate down. From then on, each trial that
    ends sets ``left`` by :func:`seconds_left` (the trials left and the confirmation rounds after
    them, at the median trial's seconds), counted down between trials (a trial's seconds: from its
    start to its end in the storage, so Ray's scheduling and evaluation are included).
    """

    def __init__(self) -> None:
        super().__init__()
        self.durations: list[float] = []
        self.workers = 1
        self.tail_rounds = 0
        self.left: float | None = None
        self.at = time.monotonic()

    def start(self, estimate_seconds: float, workers: int, tail_rounds: int = 0) -> None:
        """Count the start-up estimate down until the first trial ends.

        Args:
            estimate_seconds: the start-up estimate.
            workers: trials at the same time.
            tail_rounds: rounds of confirmation runs after the trials.
        """
        self.workers, self.left, self.at = max(1, workers), float(estimate_seconds), time.monotonic()
        self.tail_rounds = tail_rounds  # with no trials left, the estimate is the confirmations' (or 0)

    def trial_ended(self, study: optuna.Study, trial: FrozenTrial, target: int) -> None:
        """Re-estimate from the trials' measured durations."""
        if trial.datetime_start and trial.datetime_complete:
            self.durations.append((trial.datetime_complete - trial.datetime_start).total_seconds())
        if not self.durations:
            return
        self.left = seconds_left(study, target, self.workers, statistics.median(self.durations), self.tail_rounds)
        self.at = time.monotonic()

    def render(self, task) -> Text:
        if self.left is None:
            return Text("-:--:--", style="progress.remaining")
        seconds = max(0, int(self.left - (time.monotonic() - self.at)))
        return Text(str(datetime.timedelta(seconds=seconds)), style="progress.remaining")


class SearchDisplay:
    """Progress of a running search: trials done / total, time left, and the current Pareto set.

    Args:
        console: where to draw (stderr, so ``--json`` style output on stdout stays clean).
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live: Live | None = None
        self.eta = TrialsEta()
        self.progress = Progress(
            TextColumn("[bold]trials"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("left"),
            self.eta,
            console=console,
        )
        self.task_id = None
        self.failed = 0
        self.fallback_shown = False

    def start(self, bound: BoundStudy, estimate_seconds: float) -> None:
        """Print the study's header and start the live display."""
        spec, info = bound.spec, bound.info
        done = len(bound.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        self.console.print(
            f"[bold]study[/] {bound.study.study_name}  [bold]task[/] {bound.task.name} ({bound.task.metric})  "
            f"[bold]model[/] {spec.model} ({info.backbone_params:,} params, {info.num_layers} layers)\n"
            f"[bold]budget[/] {bound.budget} = {bound.limit:,} trainable params (head excluded: {info.head_params:,})  "
            f"[bold]space[/] {bound.space.name} ({len(bound.space.dimensions)} dims)  [bold]sampler[/] {spec.sampler}\n"
            f"[bold]storage[/] {mask_url(str(spec.storage))}  [bold]tracking[/] {mask_url(str(spec.tracking_uri))}\n"
            f"{max(0, spec.trials - done)} trials to run ({done} already finished), {spec.workers} at a time; "
            f"estimated {estimate_seconds / 60:.1f} min (CPU estimate)"
        )
        tail_rounds = confirmation_rounds(spec.confirm, spec.workers)
        self.eta.start(estimate_seconds, spec.workers, tail_rounds)
        self.task_id = self.progress.add_task("trials", total=spec.trials, completed=done)
        self.live = Live(self.progress, console=self.console, refresh_per_second=2, transient=False)
        self.live.start()

    def trial_ended(self, bound: BoundStudy, trial: FrozenTrial) -> None:
        """Advance the bar and redraw the Pareto set; say once when a proposal fell back to random values."""
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            self.eta.trial_ended(bound.study, trial, bound.spec.trials)
        reason = fallback_reason(trial)
        if reason is not None and not self.fallback_shown:
            self.fallback_shown = True
            self.console.print(
                f"[yellow]warning[/]: trial {trial.number}'s configuration is a random fallback, not the optimiser's "
                f"choice ({reason}); the search summary counts them"
            )
        if trial.state == TrialState.COMPLETE:
            self.progress.advance(self.task_id)
            if not self.console.is_terminal:  # a log file gets one line per trial instead of a live bar
                done = int(self.progress.tasks[0].completed)
                record = trial_record(trial)
                score = bound.objectives[0].name
                scored = f"{score} {record['score']:.4f}, " if score != "metric" else ""
                self.console.print(
                    f"trial {trial.number} finished ({done}/{bound.spec.trials}): {scored}{bound.task.metric} "
                    f"{record['metric']:.4f}, {record['trainable_params']:,} trainable "
                    f"({100 * record['trainable_fraction']:.3f}%), {trial.user_attrs.get('seconds', 0):.0f} s; "
                    f"{self.eta.render(None).plain} left"
                )
        elif trial.state == TrialState.PRUNED:
            self.progress.advance(self.task_id)
            rungs = trial.user_attrs.get("rung_scores", [])
            self.console.print(
                f"trial {trial.number} stopped early at rung {len(rungs)} (dominated): {bound.task.metric} "
                f"{trial.user_attrs.get('metric', float('nan')):.4f}, {trial.user_attrs.get('trainable_params', 0):,} "
                f"trainable, {trial.user_attrs.get('steps', 0)} steps"
            )
        else:
            self.failed += 1
            reason = trial.user_attrs.get("fail_reason", "")
            self.console.print(f"[red]trial {trial.number} failed[/]: {reason}")
        if self.live is not None:
            self.live.update(Group(self.progress, pareto_table(bound.study, "current Pareto set")))

    def confirmed(self, bound: BoundStudy, number: int, run: dict) -> None:
        """Say what a confirmation run found: the trial's metric, this seed's, and the mean over its seeds."""
        if "fail_reason" in run:
            self.console.print(f"[red]confirmation of trial {number} failed[/]: {run['fail_reason']}")
            return
        trial = bound.study.get_trials(deepcopy=False)[number]
        values, seeds = mean_values(trial, confirmation_runs(bound.study).get(number))
        score = bound.objectives[0].name
        metric = "" if score == "metric" else f" ({bound.task.metric} {run['metric']:.4f})"
        self.console.print(
            f"confirmed trial {number} with seed {run['seed']}: {score} {trial.values[0]:.4f} in the "
            f"search, {run['values'][0]:.4f} now{metric}; mean {values[0]:.4f} over {seeds} seeds"
        )
        if self.live is not None:
            self.live.update(Group(self.progress, pareto_table(bound.study, "current Pareto set")))

    def stop(self) -> None:
        """Stop the live display."""
        if self.live is not None:
            self.live.update(self.progress)
            self.live.stop()
