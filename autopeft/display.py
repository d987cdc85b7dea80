"""Showing results in the terminal: the live search display and the Pareto/trials tables."""

from __future__ import annotations

import time
from fractions import Fraction

from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from autopeft import keys
from autopeft.execution.trials import fallback_reason, incomplete_trials
from autopeft.methods.build import describe
from autopeft.pareto import mean_metric, mean_values
from autopeft.results import STATUS_QUO_KEY
from autopeft.study import SPLIT_LABELS, BoundStudy, StudyView, mask_url, trial_record
from autopeft.timing import clock, study_seconds_left


def pareto_table(view: StudyView, title: str) -> Table:
    """A table of the study's Pareto set, best first (the first objective, what selects), the status quo beside it.

    Args:
        view: the study.
        title: the table's title.
    """
    split = view.scored_on
    caption = f"metric: on the {SPLIT_LABELS[split]}; trials trained to the end; the status quo beside them"
    table = Table(title=title, caption=caption, title_justify="left")
    sparse = "sparsity" in view.attrs.get(keys.OBJECTIVES, [])
    memory = "memory" in view.attrs.get(keys.OBJECTIVES, [])
    validation = view.validation
    points = view.pareto
    front = [trial for trial, _, _ in points]
    retrained = any(t.number in validation for t in front)
    confirmed = any(seeds > 1 for _, _, seeds in points)
    confirmations = view.confirmations
    score = view.score_name
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
        *(("memory GiB (predicted / measured)",) if memory else ()),
        "configuration",
    )
    for column in columns:
        table.add_column(column, justify="right" if column != "configuration" else "left")
    rows = [(trial, values, seeds) for trial, values, seeds in points]
    quo = view.status_quo
    if quo is not None:
        rows.append((quo, list(quo.values or []), 1))
    for trial, values, seeds in rows:
        if trial is quo:
            record = view.status_quo_record()
            table.add_row(
                "status quo",
                *((f"{values[0]:.4f}",) if own_score else ()),
                f"{record['metric']:.4f}",
                *((_mean_text(record.get("metric_mean"), record.get("metric_seeds", 1)),) if confirmed else ()),
                *(("",) if retrained else ()),
                f"{record['trainable_params']:,}",
                f"{100 * record['trainable_fraction']:.3f}",
                *(("",) if sparse else ()),
                *((memory_text(record),) if memory else ()),
                f"{record['label']}" + (f" ({record['note']})" if record["note"] else ""),
                style="italic",
            )
            continue
        record = trial_record(trial, validation.get(trial.number))
        metric_mean, _ = mean_metric(trial, confirmations.get(trial.number)) if seeds > 1 else (None, 1)
        mean = (_mean_text(metric_mean, seeds),) if confirmed else ()
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
            *((memory_text(record),) if memory else ()),
            describe(record["params"]),
        )
    return table


def _mean_text(metric_mean: float | None, seeds: int) -> str:
    """``0.8312 (n=2)``: a confirmed metric's mean over its seeds (empty for one seed)."""
    return f"{metric_mean:.4f} (n={seeds})" if seeds > 1 and metric_mean is not None else ""


def memory_text(record: dict) -> str:
    """``0.53 / 0.55``: a record's predicted and measured peak training memory in GiB (``-`` where not known)."""
    predicted, measured = record.get(keys.PREDICTED_MEMORY), record.get("measured_memory_gib")
    return " / ".join("-" if v is None else f"{v:.2f}" for v in (predicted, measured))


def print_pareto(console: Console, view: StudyView, title: str) -> None:
    """Print the Pareto table."""
    console.print(pareto_table(view, title))


def print_trials(console: Console, view: StudyView) -> None:
    """Print every trial of a study."""
    table = Table(title=f"Trials of {view.name}", title_justify="left")
    for column in ("trial", "state", "metric", "trainable", "% of backbone", "configuration / failure"):
        table.add_column(column, justify="left" if column in ("state", "configuration / failure") else "right")
    for trial in view.trials:
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


class TrialsEta(ProgressColumn):
    """Time left in a search: the units it still has to train x the seconds per unit its trials took / workers
    (:func:`autopeft.timing.seconds_left`).

    Until a trial has ended it counts the start-up estimate down; from then on, each trial that ends sets
    ``left`` anew, counted down between trials.
    """

    def __init__(self) -> None:
        super().__init__()
        self.left: float | None = None
        self.at = time.monotonic()

    def start(self, estimate_seconds: float) -> None:
        """Count the start-up estimate down until the first trial ends.

        Args:
            estimate_seconds: the start-up estimate.
        """
        self.left, self.at = float(estimate_seconds), time.monotonic()

    def trial_ended(self, bound: BoundStudy) -> None:
        """Re-estimate from the trials' measured seconds per unit."""
        left = bound_seconds_left(bound)
        if left is not None:
            self.left, self.at = left, time.monotonic()

    def render(self, task) -> Text:
        left = None if self.left is None else self.left - (time.monotonic() - self.at)
        return Text(clock(left), style="progress.remaining")


def bound_seconds_left(bound: BoundStudy) -> float | None:
    """:func:`autopeft.timing.study_seconds_left` of a running search."""
    return study_seconds_left(StudyView(bound.study), bound.spec.how)


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
        what, how, where, info = bound.spec.what, bound.spec.how, bound.spec.where, bound.info
        done = len(bound.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        self.console.print(
            f"[bold]study[/] {bound.study.study_name}  [bold]task[/] {bound.task.name} ({bound.task.metric})  "
            f"[bold]model[/] {what.model} ({info.backbone_params:,} params, {info.num_layers} layers)\n"
            f"[bold]budget[/] {bound.budget} = {bound.limit:,} trainable params (head excluded: {info.head_params:,})  "
            f"[bold]space[/] {bound.space.name} ({len(bound.space.dimensions)} dims)  [bold]sampler[/] {how.sampler}\n"
            f"[bold]storage[/] {mask_url(str(where.storage))}  [bold]tracking[/] {mask_url(str(where.tracking_uri))}\n"
            f"{max(0, how.trials - done)} trials to run ({done} already finished), {how.workers} at a time; "
            f"estimated {estimate_seconds / 60:.1f} min (CPU estimate; successive halving from rung "
            f"{Fraction(what.rungs.first).limit_denominator(64)} of the full schedule, and the status quo "
            f"{bound.status_quo.label}{' (' + bound.status_quo.note + ')' if bound.status_quo.note else ''})"
        )
        incomplete = incomplete_trials(bound)
        if incomplete:
            listed = ", ".join(f"{t.number} ({len(t.params)} of {len(bound.space.dimensions)})" for t in incomplete)
            self.console.print(
                f"[yellow]{len(incomplete)} failed trial{'s' * (len(incomplete) != 1)} hold only part of their "
                f"values[/] (a search died while writing them): trial {listed}; every sampler skips them"
            )
        self.eta.start(estimate_seconds)
        self.task_id = self.progress.add_task("trials", total=how.trials, completed=done)
        self.live = Live(self.progress, console=self.console, refresh_per_second=2, transient=False)
        self.live.start()

    def trial_ended(self, bound: BoundStudy, trial: FrozenTrial) -> None:
        """Advance the bar and redraw the Pareto set; say once when a proposal fell back to random values."""
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            self.eta.trial_ended(bound)
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
                    f"trial {trial.number} finished ({done}/{bound.spec.how.trials}): {scored}{bound.task.metric} "
                    f"{record['metric']:.4f}, {record['trainable_params']:,} trainable "
                    f"({100 * record['trainable_fraction']:.3f}%), {trial.user_attrs.get('seconds', 0):.0f} s; "
                    f"{self.eta.render(None).plain} left"
                )
        elif trial.state == TrialState.PRUNED:
            self.progress.advance(self.task_id)
            rungs = trial.user_attrs.get("rungs", [])
            at = f"{Fraction(rungs[-1]['fraction']).limit_denominator(64)}" if rungs else "?"
            self.console.print(
                f"trial {trial.number} stopped at rung {at} of the schedule (outside the top of its rung): "
                f"{bound.task.metric} {trial.user_attrs.get('metric', float('nan')):.4f}, "
                f"{trial.user_attrs.get('trainable_params', 0):,} trainable, {trial.user_attrs.get('steps', 0)} steps"
            )
        else:
            self.failed += 1
            reason = trial.user_attrs.get("fail_reason", "")
            self.console.print(f"[red]trial {trial.number} failed[/]: {reason}")
        if self.live is not None:
            self.live.update(Group(self.progress, pareto_table(StudyView(bound.study), "current Pareto set")))

    def event(self, line: str) -> None:
        """Show a line of the search's (the first rung raised or settled, the status quo's end)."""
        self.console.print(line)

    def confirmed(self, bound: BoundStudy, number: int | str, run: dict) -> None:
        """Say what a confirmation run found: the trial's (or the status quo's) metric, this seed's, and the mean
        over its seeds."""
        what = "the status quo" if number == STATUS_QUO_KEY else f"trial {number}"
        if "fail_reason" in run:
            self.console.print(f"[red]confirmation of {what} failed[/]: {run['fail_reason']}")
            return
        view = StudyView(bound.study)
        trial = view.status_quo if number == STATUS_QUO_KEY else view.trial(number)
        values, seeds = mean_values(trial, view.confirmations.get(number))
        score = bound.objectives[0].name
        metric = "" if score == "metric" else f" ({bound.task.metric} {run['metric']:.4f})"
        self.console.print(
            f"confirmed {what} with seed {run['seed']}: {score} {trial.values[0]:.4f} in the "
            f"search, {run['values'][0]:.4f} now{metric}; mean {values[0]:.4f} over {seeds} seeds"
        )
        if self.live is not None:
            self.live.update(Group(self.progress, pareto_table(StudyView(bound.study), "current Pareto set")))

    def stop(self) -> None:
        """Stop the live display."""
        if self.live is not None:
            self.live.update(self.progress)
            self.live.stop()
