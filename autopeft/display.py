"""Showing results in the terminal: the live search display and the Pareto/trials tables."""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from autopeft.pareto import pareto_trials
from autopeft.study import BoundStudy, mask_url, trial_record


def describe_config(config: dict | None) -> str:
    """A short human description of a configuration (``lora L0,2 query+value r2-8; lr 1.2e-03``)."""
    if not config:
        return ""
    parts = []
    for name, plan in config["methods"].items():
        if name == "pruning":
            parts.append(f"prune {plan['target']:.0%} {plan['granularity']} {plan['criterion']} {plan['schedule']}")
            continue
        targets = plan.get("targets", [])
        if not targets:
            parts.append(name)  # full fine-tuning
            continue
        layers = sorted({t[0] for t in targets})
        places = sorted({t[1] for t in targets if isinstance(t[1], str)})
        sizes = sorted({t[-1] for t in targets if not isinstance(t[-1], str)})
        size_text = "" if not sizes else f" {sizes[0]}" if len(sizes) == 1 else f" {sizes[0]}-{sizes[-1]}"
        place_text = f" {'+'.join(places)}" if places else ""
        parts.append(f"{name} L{','.join(map(str, layers))}{place_text}{size_text}")
    parts.append(f"lr {config['training']['learning_rate']:.1e}")
    return "; ".join(parts)


def pareto_table(study: optuna.Study, title: str) -> Table:
    """A table of the study's Pareto set, best metric first.

    Args:
        study: the study.
        title: the table's title.
    """
    table = Table(title=title, title_justify="left")
    sparse = "sparsity" in study.user_attrs.get("autopeft.objectives", [])
    columns = ("trial", "metric", "trainable", "% of backbone", *(("sparsity",) if sparse else ()), "configuration")
    for column in columns:
        table.add_column(column, justify="right" if column != "configuration" else "left")
    for trial in pareto_trials(study):
        record = trial_record(trial)
        sparsity = (f"{record.get('sparsity') or 0:.3f}",) if sparse else ()
        table.add_row(
            str(record["trial"]),
            f"{record['metric']:.4f}",
            f"{record['trainable_params']:,}",
            f"{100 * record['trainable_fraction']:.3f}",
            *sparsity,
            describe_config(record["params"]),
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
            record.get("fail_reason") or describe_config(record["params"]),
        )
    console.print(table)


class SearchDisplay:
    """Progress of a running search: trials done / total, time left, and the current Pareto set.

    Args:
        console: where to draw (stderr, so ``--json`` style output on stdout stays clean).
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live: Live | None = None
        self.progress = Progress(
            TextColumn("[bold]trials"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=console,
        )
        self.task_id = None
        self.failed = 0

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
        self.task_id = self.progress.add_task("trials", total=spec.trials, completed=done)
        self.live = Live(self.progress, console=self.console, refresh_per_second=2, transient=False)
        self.live.start()

    def trial_ended(self, bound: BoundStudy, trial: FrozenTrial) -> None:
        """Advance the bar and redraw the Pareto set."""
        if trial.state == TrialState.COMPLETE:
            self.progress.advance(self.task_id)
            if not self.console.is_terminal:  # a log file gets one line per trial instead of a live bar
                done = int(self.progress.tasks[0].completed)
                record = trial_record(trial)
                self.console.print(
                    f"trial {trial.number} finished ({done}/{bound.spec.trials}): {bound.task.metric} "
                    f"{record['metric']:.4f}, {record['trainable_params']:,} trainable "
                    f"({100 * record['trainable_fraction']:.3f}%), {trial.user_attrs.get('seconds', 0):.0f} s"
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

    def stop(self) -> None:
        """Stop the live display."""
        if self.live is not None:
            self.live.update(self.progress)
            self.live.stop()
