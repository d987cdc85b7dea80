"""``search`` and ``submit``: a search here, or as a job of a Ray cluster; both take every spec field as a flag."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from autopeft.cli.base import Command, given_spec_options, shown_default, spec_option
from autopeft.errors import AutopeftError


def spec_options(parser: argparse.ArgumentParser) -> None:
    """``--spec`` and a flag for every declared spec field (:mod:`autopeft.study.spec`)."""
    from autopeft.study.spec import StudySpec, paths

    parser.add_argument(
        "--spec", help="a study spec file (YAML or JSON, see studies/) whose keys are these options; options given win"
    )
    for path, option in paths(StudySpec):
        if option.cli:
            info = _field(path)
            spec_option(parser, path, option, info, None if option.url or option.env else shown_default(info))


def _field(path: tuple[str, ...]):
    from autopeft.study.spec import StudySpec

    model, info = StudySpec, None
    for part in path:
        info = model.model_fields[part]
        model = info.annotation
    return info


def spec_of_args(args: argparse.Namespace):
    """The ``StudySpec`` the options ask for, validated: the spec file's keys, then the options given."""
    from autopeft.schema import read_yaml
    from autopeft.study import StudySpec

    flat: dict[str, Any] = {}
    if args.spec:
        path = Path(args.spec)
        if not path.is_file():
            raise AutopeftError(f"--spec {args.spec!r}: no such file")
        raw = read_yaml(path) or {}
        if not isinstance(raw, dict):
            raise AutopeftError(f"{path}: expected a mapping of search options")
        flat = {str(k).replace("_", "-"): v for k, v in raw.items()}
    flat |= given_spec_options(args)
    for required in ("task", "budget"):
        if required not in flat:
            raise AutopeftError(f"--{required} is required (on the command line or in --spec)")
    try:
        return StudySpec.from_dict(flat)
    except AutopeftError as exc:
        raise AutopeftError(f"{args.spec}: {exc}" if args.spec and "unknown key" in str(exc) else str(exc)) from None


class Search(Command):
    name = "search"
    help = "run or continue a search"
    description = "Run (or continue) a multi-objective search of PEFT configurations."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        spec_options(parser)

    def take_action(self, args: argparse.Namespace) -> int:
        from autopeft.service import check_confined

        spec = spec_of_args(args)  # bad options fail here, before the training stack is imported
        check_confined(spec)  # a submitted job reads spec files only from the folder it shipped

        from rich.console import Console

        from autopeft.display import SearchDisplay, print_pareto
        from autopeft.search import run_search
        from autopeft.study import StudyView

        console = Console(stderr=True, soft_wrap=True)
        display = SearchDisplay(console)
        try:
            summary = run_search(
                spec,
                on_start=display.start,
                on_trial_end=display.trial_ended,
                on_confirmation=display.confirmed,
                on_event=display.event,
            )
        finally:
            display.stop()
        view = StudyView(summary.bound.study)
        print_pareto(Console(), view, title=f"Pareto set of {view.name}")
        if summary.unconfirmed:
            from autopeft.results import STATUS_QUO_KEY

            runs = sum(1 for run in summary.confirmations if run["trial"] != STATUS_QUO_KEY)  # the picks' runs
            picks = ", ".join(f"trial {n}" for n in summary.unconfirmed)
            verb = "picks {} are" if len(summary.unconfirmed) > 1 else "pick {} is"
            console.print(
                f"[yellow]warning[/]: after {runs} confirmation run{'s' * (runs != 1)} the {verb.format(picks)} "
                "unconfirmed (on one seed: a confirmation moved the pick, or failed); the same command confirms it"
            )
        unlearnt = view.not_learnt_warning()
        if unlearnt:
            console.print(f"[yellow]warning[/]: {unlearnt}")
        if summary.verdict:
            console.print(f"[yellow]{summary.verdict}[/]: export --pick best exports the status quo")
        if summary.fallbacks:
            console.print(
                f"[yellow]{summary.fallbacks} of the study's proposals fell back to random values[/] "
                f"(first reason: {summary.fallback_reason}); see the trials' 'proposal' attribute"
            )
        console.print(
            f"{summary.finished} trials trained to the end, {summary.pruned} stopped at a rung "
            f"({summary.failed_now} failed in this run) in {summary.seconds / 60:.1f} min. "
            f"Next: autopeft export --study {view.name} --runs-dir {spec.where.runs_dir} --pick knee --out best/"
        )
        return 0


def address_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS") if str(os.environ.get("RAY_ADDRESS", "")).startswith("http") else None,
        help="the Ray job server, http://HEAD:8265 (env RAY_ADDRESS when it is an http address)",
    )


def require_address(args: argparse.Namespace) -> str:
    if not args.address:
        raise AutopeftError("--address is required: the Ray job server, http://HEAD:8265")
    return args.address


class Submit(Command):
    name = "submit"
    help = "submit a search to a Ray cluster's job server"
    description = (
        "Validate a search here, then run it as a job of a Ray cluster (its job server, the dashboard's port): the "
        "resolved spec travels with the task, space and objectives files. The study needs a PostgreSQL storage and an "
        "MLflow server the cluster reaches (--storage/$AUTOPEFT_STORAGE, --tracking-uri/$MLFLOW_TRACKING_URI). "
        "With token authentication, set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        address_option(parser)
        spec_options(parser)

    def take_action(self, args: argparse.Namespace) -> int:
        import tempfile

        from autopeft.service import require_cluster_stores, ship, submit
        from autopeft.study import bind

        address = require_address(args)
        spec = spec_of_args(args)
        where, runs = spec.where, spec.runs  # a store left at the runs folder's default was not given
        require_cluster_stores(
            where.storage if where.storage != runs.storage else None,
            where.tracking_uri if where.tracking_uri != runs.tracking_uri else None,
        )
        bind(spec)  # the same validation as search: task, space, objectives, budget, model, status quo
        with tempfile.TemporaryDirectory(prefix="autopeft-submit-") as folder:
            ship(spec, Path(folder))  # a task's data outside its folder gets a one-line error here
            job = submit(address, spec, Path(folder))
        print(f"submitted job {job} running study {spec.name}")
        print(f"follow it: autopeft logs {job} --follow --address {address}")
        return 0
