"""``evaluate``, ``retrain`` and ``baselines``: fixed configurations trained with several seeds, after a search or
without one. Their training options are the spec's (:class:`autopeft.study.spec.Training`)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from typing import Any

from autopeft.cli.base import (
    Command,
    json_option,
    open_view,
    runs_dir_option,
    shown_default,
    spec_option,
    storage_of,
    storage_option,
    tracking_of,
    tracking_option,
)
from autopeft.errors import AutopeftError


def training_options(parser: argparse.ArgumentParser, inherited: str | None = None) -> None:
    """The training options (epochs, examples, batch size, length, attention dropout), as the spec declares them.

    Args:
        parser: the verb's parser.
        inherited: where options not given come from, said in the help (``the study's``); default: the defaults.
    """
    from autopeft.study.spec import Training, option_of

    for name, info in Training.model_fields.items():
        option = option_of(info)
        if option.cli:
            shown = shown_default(info) if inherited is None else f"{inherited}, else {shown_default(info)}"
            spec_option(parser, ("what", "training", name), option, info, shown)


def training_of(args: argparse.Namespace, base=None, **fixed: Any):
    """The training settings the options ask for: options given, then ``fixed``, then ``base``'s (a study's), then
    the defaults; validated as the spec validates them.

    Args:
        args: parsed options.
        base: a ``Training`` section whose values stand where no option is given.
        fixed: values that stand where no option is given, before ``base``'s (retrain's full schedule).
    """
    from autopeft.study.spec import Training

    given = {
        k: getattr(args, f"what__training__{k}")
        for k in Training.model_fields
        if getattr(args, f"what__training__{k}", None) is not None
    }
    merged = {**(base.model_dump() if base is not None else {}), **fixed, **given}
    return Training(**merged).settings()


def model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", help="built-in task (rte, mrpc, cola, sst2, stsb) or a task file (see tasks/)")
    parser.add_argument("--model", help="HF model id or local folder (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--data-dir", default=os.environ.get("AUTOPEFT_DATA_DIR"), help="folder of the GLUE tasks")
    parser.add_argument(
        "--trust-remote-code", action=argparse.BooleanOptionalAction, default=False, help="allow the model's own code"
    )


def seeds_of(args: argparse.Namespace) -> list[int]:
    if args.seeds < 1:
        raise AutopeftError(f"--seeds must be at least 1, got {args.seeds}")
    return [args.seed + k for k in range(args.seeds)]


def seed_options(parser: argparse.ArgumentParser, seeds: int) -> None:
    parser.add_argument(
        "--seeds", type=int, default=seeds, help=f"seeds, each a separate training run (default {seeds})"
    )
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")


class SeedProgress:
    """Progress over seeded runs: a bar with the time elapsed and left on a terminal; elsewhere (a log file, the
    job server's log) one line per finished run, with the runs left and the time they take at the pace so far.

    Args:
        total: the runs the command plans (:meth:`stored` takes out those stored earlier).
        what: what is training (``retraining``, ``baselines``).
        metric: the task's metric, named in each line.
    """

    def __init__(self, total: int, what: str, metric: str) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True, soft_wrap=True)
        columns = (TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        self.progress = Progress(*columns, TimeRemainingColumn(), console=self.console)
        self.task_id = self.progress.add_task(what, total=total)
        self.what, self.metric, self.total, self.done = what, metric, total, 0
        self.started = time.monotonic()

    def __enter__(self) -> SeedProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def stored(self, count: int) -> None:
        """Take out runs stored by an earlier command (not trained again)."""
        self.total -= count
        self.progress.update(self.task_id, total=self.total)

    def run_ended(self, label: str, result: dict[str, Any]) -> None:
        """Count a finished run (``label``: what it trained, e.g. ``trial 7``) and, off a terminal, print its line."""
        self.done += 1
        self.progress.advance(self.task_id)
        if self.console.is_terminal:
            return
        from autopeft.timing import clock

        elapsed = time.monotonic() - self.started
        left = elapsed / self.done * max(0, self.total - self.done)
        self.console.print(
            f"{self.what}: {self.done}/{self.total} runs done; {label} {run_line(self.metric, result)}; "
            f"{clock(elapsed)} elapsed, about {clock(left)} left"
        )


class Evaluate(Command):
    name = "evaluate"
    aliases = ("trial",)
    help = "train and evaluate one configuration (on any task: transfer)"
    description = (
        "Train one configuration (no search) with each seed and print its metric (mean ± std over seeds), trainable "
        "parameters and measured sparsity. The configuration is an export folder, a JSON/YAML file with `methods` "
        "(method -> plan, as in an export's autopeft.json `config`) and `training`, or a trial of a study (--study, "
        "--pick). --task may differ from the one it was found on: that tests transfer."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--config", help="configuration file (JSON/YAML) or export folder")
        parser.add_argument("--study", help="take the configuration from this study instead (with --pick)")
        parser.add_argument("--pick", default="knee", help="with --study: knee (default), best or a trial number")
        runs_dir_option(parser)
        storage_option(parser)
        model_options(parser)
        training_options(parser)
        seed_options(parser, 1)
        parser.add_argument("--out", help="also write an export folder here (autopeft.json, peft config, masks)")
        json_option(parser)

    def take_action(self, args: argparse.Namespace) -> int:
        from rich.console import Console

        from autopeft.evaluation import RunPlan, evaluate_config
        from autopeft.methods.build import check_config
        from autopeft.models import backbone_info, default_model
        from autopeft.runs_dir import RunsDir
        from autopeft.study import dumps
        from autopeft.tasks import get_task, task_reference

        seeds = seeds_of(args)
        config, origin = self.configuration(args)
        task_ref = args.task or origin.get("task")
        if not task_ref:
            raise AutopeftError("--task is required (the configuration names no task)")
        settings = training_of(args)
        task = get_task(task_ref)
        model = args.model or origin.get("model") or default_model()
        info = backbone_info(model, task.num_labels, args.trust_remote_code)
        config = check_config(config, info, source=origin["source"])
        console = Console(stderr=True, soft_wrap=True)
        plan = RunPlan(
            model, task_reference(task_ref), args.data_dir, settings, str(RunsDir.at(args.runs_dir).tokenized)
        )
        console.print(f"training {', '.join(config.methods)} on {task.name} with {len(seeds)} seed(s) ...")
        summary = evaluate_config(
            config,
            info,
            plan,
            seeds,
            args.out,
            origin["source"],
            lambda seed, r: console.print(run_line(task.metric, r)),
        )
        if args.json:
            print(dumps(summary))
            return 0
        print_seed_table(f"{', '.join(config.methods)} on {task.name}", task.metric, summary)
        return 0

    @staticmethod
    def configuration(args: argparse.Namespace):
        """The configuration to train, with the model and task it came with: from a file, an export or a study."""
        from autopeft.methods.config import read_config
        from autopeft.models import resolve_backbone
        from autopeft.study import trial_config

        if bool(args.config) == bool(args.study):
            raise AutopeftError("give either --config (a file or export folder) or --study (with --pick)")
        if args.study:
            view = open_view(args)
            trial = view.pick_trial(args.pick)
            source = f"{view.name} trial {trial.number}"
            return trial_config(trial), {"model": view.backbone, "task": view.spec.what.task, "source": source}
        config, document = read_config(args.config)
        recorded = document.get("model_path") or document.get("model")
        model = resolve_backbone(recorded, document.get("model")) if recorded else None
        return config, {"model": model, "task": document.get("task"), "source": str(args.config)}


def run_line(metric: str, result: dict) -> str:
    if "fail_reason" in result:
        return f"seed {result['seed']}: [red]failed[/]: {result['fail_reason']}"
    return f"seed {result['seed']}: {metric} {result['metric']:.4f} ({result['seconds']:.0f} s)"


def print_seed_table(title: str, metric: str, summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("field")
    table.add_column("value", justify="right")
    mean = f"{summary['metric']:.4f}" + (f" ± {summary['metric_std']:.4f}" if summary["seeds"] > 1 else "")
    table.add_row(metric + (f" (mean ± std, {summary['seeds']} seeds)" if summary["seeds"] > 1 else ""), mean)
    for key in ("trainable_params", "trainable_fraction", "target_sparsity", "sparsity", "steps", "seconds"):
        value = summary[key]
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else f"{value:,}")
    if summary["failed"]:
        table.add_row("failed runs", str(summary["failed"]))
    Console().print(table)


class Retrain(Command):
    name = "retrain"
    help = "retrain chosen trials at full fidelity with several seeds"
    description = (
        "Retrain trials of a study on the whole training split (default 3 epochs) with several seeds; store each run "
        "in the study, log it to MLflow under the study's parent run, and print mean ± std. `report` then shows these "
        "numbers. Runs already stored for a seed and these settings are skipped."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--study", help="study name (default: the only study in the storage)")
        runs_dir_option(parser)
        storage_option(parser)
        parser.add_argument(
            "--pick", nargs="+", default=["knee"], help="pareto, knee (default), best and/or trial numbers"
        )
        seed_options(parser, 3)
        training_options(parser, inherited="full fidelity: the study's")
        parser.add_argument("--data-dir", default=os.environ.get("AUTOPEFT_DATA_DIR"), help="default: the study's")
        tracking_option(parser)
        json_option(parser)

    def take_action(self, args: argparse.Namespace) -> int:
        from rich.console import Console
        from rich.table import Table

        from autopeft import defaults
        from autopeft.evaluation import require_validation
        from autopeft.execution.rungs import entry_text
        from autopeft.retrain import chosen_trials, register_picks, retrain
        from autopeft.study import dumps
        from autopeft.tasks import get_task

        seeds = seeds_of(args)
        view = open_view(args)
        what = view.spec.what
        require_validation(get_task(what.task), args.data_dir or what.data_dir, "retrain")
        full = {"epochs": defaults.FULL_EPOCHS, "max_train_samples": None, "max_eval_samples": None}
        settings = training_of(args, what.training, **full, batch_size=defaults.FULL_BATCH_SIZE)
        picks = chosen_trials(view, args.pick)
        with SeedProgress(len(picks) * len(seeds), "retraining", get_task(what.task).metric) as progress:
            results = retrain(
                view, picks, seeds, settings, args.runs_dir, args.data_dir, args.tracking_uri,
                on_run=lambda trial, seed, result: progress.run_ended(entry_text(trial), result),
                on_stored=progress.stored,
            )  # fmt: skip
        registered = register_picks(open_view(args), args.pick, args.runs_dir, args.data_dir, args.tracking_uri)
        for alias, version in registered.items():
            Console(stderr=True, soft_wrap=True).print(f"registered model {view.name!r} version {version} as @{alias}")
        if args.json:
            print(dumps([dataclasses.asdict(r) for r in results]))
            return 0
        table = Table(title=f"Retrained trials of {view.name} ({results[0].settings})", title_justify="left")
        split = view.scored_on
        for column in ("trial", f"search metric ({split})", "validation, retrained (mean ± std)", "seeds", "failed"):
            table.add_column(column, justify="right")
        for r in results:
            search = f"{r.search_metric:.4f}" if r.search_metric is not None else ""
            retrained = f"{r.summary.mean:.4f} ± {r.summary.std:.4f}" if r.summary else "all failed"
            table.add_row(str(r.trial), search, retrained, str(r.summary.seeds if r.summary else 0), str(r.failed))
        Console().print(table)
        return 0


class Baselines(Command):
    name = "baselines"
    help = "train hand-made reference configurations beside a study"
    description = (
        "Train the standard configurations (LoRA r=8 on query/value; Houlsby and Pfeiffer adapters and prefix tuning "
        "sized to the budget; full fine-tuning for reference) with each seed, store them in the study storage (study "
        "<task>-<model>-<budget>-baselines) and MLflow, and print mean ± std. `report` of a study with the same task, "
        "model and budget marks them on its plot."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--budget", help="the budget the sizes follow (as for search)")
        parser.add_argument("--study", help="take task, model, budget, data and training settings from this study")
        parser.add_argument(
            "--only",
            help="comma-separated baselines (default: lora,houlsby,pfeiffer,prefix,full; the seed methods' references "
            "side_tuning, sparse_plus_lowrank, incre_lora, subspace run when named)",
        )
        parser.add_argument("--learning-rate", type=float, help="one learning rate for all (default: each its usual)")
        model_options(parser)
        training_options(parser, inherited="the study's")
        seed_options(parser, 3)
        tracking_option(parser)
        json_option(parser)
        runs_dir_option(parser)
        storage_option(parser)

    def take_action(self, args: argparse.Namespace) -> int:
        from rich.console import Console
        from rich.table import Table

        from autopeft.baselines import BASELINES, run_baselines_beside
        from autopeft.models import default_model
        from autopeft.study import dumps, mask_url

        what = open_view(args).spec.what if args.study else None
        task_ref = args.task or (what.task if what else None)
        budget_text = args.budget or (what.budget if what else None)
        if not task_ref or not budget_text:
            raise AutopeftError("--task and --budget are required (or --study to take them from a study)")
        seeds = seeds_of(args)
        standard = [name for name, baseline in BASELINES.items() if baseline.standard]
        names = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else standard
        settings = training_of(args, what.training if what else None)
        from autopeft.tasks import get_task

        task = get_task(task_ref)
        with SeedProgress(len(names) * len(seeds), "baselines", task.metric) as progress:
            name, results = run_baselines_beside(
                task_ref, budget_text, args.model or (what.model if what else None) or default_model(), names,
                settings, seeds, storage_of(args), args.runs_dir, args.tracking_uri,
                args.data_dir or (what.data_dir if what else None), args.learning_rate, args.trust_remote_code,
                on_run=lambda baseline, seed, result: progress.run_ended(baseline, result),
                on_stored=progress.stored,
            )  # fmt: skip
        if args.json:
            print(dumps([dataclasses.asdict(r) for r in results]))
            return 0
        table = Table(title=f"Baselines {name} ({results[0].settings if results else ''})", title_justify="left")
        for column in (
            "baseline",
            f"{task.metric} (mean ± std)",
            "seeds",
            "trainable",
            "% of backbone",
            "within budget",
        ):
            table.add_column(column, justify="left" if column == "baseline" else "right")
        for r in results:
            metric = f"{r.summary.mean:.4f} ± {r.summary.std:.4f}" if r.summary else "all failed"
            table.add_row(
                r.label, metric, str(r.summary.seeds if r.summary else 0), f"{r.trainable_params:,}",
                f"{100 * r.trainable_fraction:.3f}", "no" if r.over_budget else "yes",
            )  # fmt: skip
        Console().print(table)
        where = f"{mask_url(storage_of(args))}) and MLflow {mask_url(tracking_of(args))}"
        Console(stderr=True, soft_wrap=True).print(f"stored in study {name} ({where}")
        return 0
