"""``pareto``, ``trials``, ``export``, ``report`` and ``sync``: what a study found, read back through its view."""

from __future__ import annotations

import argparse

from autopeft.cli.base import Command, json_option, open_view, storage_of, study_options, tracking_of, tracking_option
from autopeft.errors import AutopeftError


class Pareto(Command):
    name = "pareto"
    help = "print the Pareto set of a study (the status quo beside it)"
    description = "Print the Pareto set of a study as a table or JSON, the status quo beside it (trial: status_quo)."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        study_options(parser)
        json_option(parser)

    def take_action(self, args: argparse.Namespace) -> int:
        from rich.console import Console

        from autopeft.display import print_pareto
        from autopeft.study import dumps

        view = open_view(args)
        if args.json:
            records = [view.record(t.number) for t in view.pareto_trials]
            quo = view.status_quo_record()
            records += [quo] if quo is not None else []
            for record in records:
                record.pop("state", None)
            print(dumps(records))
        else:
            print_pareto(Console(), view, title=f"Pareto set of {view.name}")
        return 0


class Trials(Command):
    name = "trials"
    help = "print every trial of a study"
    description = "Print every trial of a study as a table or JSON."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        study_options(parser)
        json_option(parser)

    def take_action(self, args: argparse.Namespace) -> int:
        from rich.console import Console

        from autopeft.display import print_trials
        from autopeft.study import dumps

        view = open_view(args)
        if args.json:
            print(dumps([view.record(t.number) for t in view.trials]))
        else:
            print_trials(Console(), view)
        return 0


class Export(Command):
    name = "export"
    help = "export a trial as a peft configuration"
    description = (
        "Write adapter_config.json (peft.PeftConfig.from_pretrained loads it) and autopeft.json. --pick knee takes the "
        "Pareto point farthest from the line through the extreme points (objectives scaled to [0, 1]): where saving "
        "more parameters starts to cost the most metric; best takes the best metric on the Pareto set, or the status "
        "quo when nothing beat it."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        study_options(parser)
        parser.add_argument("--pick", default="knee", help="knee (default), best, or a trial number")
        parser.add_argument("--out", required=True, help="output folder")
        parser.add_argument(
            "--trained", nargs="?", const="closest", choices=("closest", "all"),
            help="also the weights `retrain` kept: of the seed closest to the seeds' mean (closest, the default), or "
            "of every seed (all: one folder per seed under --out)",
        )  # fmt: skip

    def take_action(self, args: argparse.Namespace) -> int:
        from autopeft.export import export_trial

        summary = export_trial(open_view(args), args.pick, args.out, args.trained, args.runs_dir)
        weights = ""
        if "trained" in summary:
            run = summary["trained"]
            weights = f" with the weights of seed {run['seed']} ({summary['metric_name']} {run['metric']:.4f})"
        if summary["status_quo"]:
            print(f"{summary['verdict']}; exported the status quo{weights} to {args.out}")
            return 0
        validation = summary.get("validation")
        reported = (
            f", {validation['mean']:.4f} ± {validation['std']:.4f} on the validation split "
            f"({validation['seeds']} seeds)"
            if validation
            else ", not retrained yet (autopeft retrain gives its validation figure)"
        )
        print(
            f"exported trial {summary['trial']} of {summary['study']} "
            f"({summary['metric_name']} {summary['metric']:.4f} "
            f"on the {summary['scored_on']} split{reported}; {summary['trainable_params']:,} trainable parameters)"
            f"{weights} to {args.out}"
        )
        return 0


class Report(Command):
    name = "report"
    help = "write a study's Pareto plot, trials table and summary"
    description = (
        "Write pareto.png (metric vs trainable %% on a log scale: trials, Pareto front, knee, the status quo, "
        "retrained means, baselines, budget), trials.csv and summary.md to --out, and attach them to the study's "
        "MLflow parent run."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        study_options(parser)
        parser.add_argument("--out", required=True, help="output folder")
        tracking_option(parser)

    def take_action(self, args: argparse.Namespace) -> int:
        from autopeft.report import finished_count, write_report
        from autopeft.runs_dir import RunsDir
        from autopeft.tracking import StudyTracker

        view = open_view(args)
        if not finished_count(view):
            raise AutopeftError(f"study {view.name!r} has no finished trial yet: nothing to report")
        runs = RunsDir.at(args.runs_dir)
        what = view.spec.what
        tracker = StudyTracker(
            tracking_of(args), view.name, runs.artifacts, view.spec.to_dict(), attach=True, task=what.task,
            data_dir=what.data_dir,
        )  # fmt: skip
        paths = write_report(view, storage_of(args), args.out, tracker)
        logged = "; attached to the MLflow parent run" if tracker.enabled else "; MLflow unreachable, not attached"
        print(f"wrote {', '.join(str(p) for p in paths.values())}{logged}")
        return 0


class Sync(Command):
    name = "sync"
    help = "log to MLflow the trials it missed"
    description = "Write the MLflow runs missing for a study's trials (after a tracking outage); tag its Pareto set."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        study_options(parser)
        tracking_option(parser)

    def take_action(self, args: argparse.Namespace) -> int:
        from autopeft.runs_dir import RunsDir
        from autopeft.study import mask_url
        from autopeft.tracking import StudyTracker

        view = open_view(args)
        uri = tracking_of(args)
        what = view.spec.what
        tracker = StudyTracker(
            uri, view.name, RunsDir.at(args.runs_dir).artifacts, view.spec.to_dict(), task=what.task,
            data_dir=what.data_dir,
        )  # fmt: skip
        logged = tracker.sync(view.study)
        if not tracker.enabled:
            raise AutopeftError(f"MLflow at {mask_url(uri)} is unreachable; nothing was synced")
        tracker.finish()
        print(f"logged {logged} missing trial runs of {view.name} to {mask_url(uri)}")
        return 0
