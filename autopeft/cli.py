"""The ``autopeft`` command line: thin wrappers that parse, call the library and print."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, NoReturn

from autopeft import defaults
from autopeft.errors import AutopeftError, SearchAborted


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage dump), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _runs_dir_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runs-dir",
        default=os.environ.get("AUTOPEFT_RUNS_DIR", "autopeft-runs"),
        help="folder holding everything studies write (env AUTOPEFT_RUNS_DIR; default ./autopeft-runs)",
    )
    parser.add_argument(
        "--storage",
        default=os.environ.get("AUTOPEFT_STORAGE"),
        help="Optuna storage URL (env AUTOPEFT_STORAGE; default: sqlite:///<runs-dir>/optuna.db)",
    )


def _tracking_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow tracking URI (env MLFLOW_TRACKING_URI; default: sqlite:///<runs-dir>/mlflow.db)",
    )


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _study_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", help="study name (default: the only study in the storage)")
    _runs_dir_options(parser)


_PROXY_OPTIONS = (
    ("--epochs", "epochs", float, "training epochs, fractions allowed"),
    ("--max-train-samples", "max_train_samples", int, "training examples (0 = all)"),
    ("--max-eval-samples", "max_eval_samples", int, "validation examples evaluated (0 = all)"),
    ("--batch-size", "batch_size", int, "training batch size"),
    ("--max-length", "max_length", int, "truncation length in tokens"),
)


_PROXY_DEFAULTS = {
    "epochs": defaults.EPOCHS,
    "max_train_samples": defaults.MAX_TRAIN_SAMPLES,
    "max_eval_samples": 0,
    "batch_size": defaults.BATCH_SIZE,
    "max_length": defaults.MAX_LENGTH,
}
"""What ``ProxySettings()`` holds, readable by ``--help`` without importing torch (0: all)."""


def _training_options(parser: argparse.ArgumentParser, numeric: list[tuple], inherited: str = "") -> None:
    """Options of the model, the data and the training, shared by every command that trains.

    Args:
        parser: the command's parser.
        numeric: further ``(flag, type, default, help)`` options.
        inherited: where unset proxy options come from besides the defaults (``the study's``), for help.
    """
    parser.add_argument("--task", help="built-in task (rte, mrpc, cola, sst2, stsb) or a task file (see tasks/)")
    parser.add_argument("--model", help="HF model id or local folder (default: the packaged all-MiniLM-L6-v2)")
    for flag, kind, default, text in numeric:
        parser.add_argument(flag, type=kind, default=default, help=f"{text} (default {default})")
    for flag, field_name, kind, text in _PROXY_OPTIONS:
        shown = _PROXY_DEFAULTS[field_name]
        source = f"{inherited}, else {shown}" if inherited else f"{shown}"
        parser.add_argument(flag, type=kind, help=f"{text} (default: {source})")
    _attention_dropout_option(parser, f"{inherited}, else on" if inherited else "on")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("AUTOPEFT_DATA_DIR"),
        help="folder of the GLUE tasks (env AUTOPEFT_DATA_DIR); default: download with `datasets`",
    )
    parser.add_argument(
        "--trust-remote-code",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="allow the model's own code from its repository (off by default)",
    )


def _attention_dropout_option(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--attention-dropout",
        action=argparse.BooleanOptionalAction,
        help="keep the model's dropout on attention probabilities while training (--no-attention-dropout: the "
        f"fused attention kernel runs on CPUs too, 10-25%% faster, but the model trains unlike its own config; "
        f"default: {default})",
    )


def _proxy_settings(args: argparse.Namespace, base=None):
    """The training settings the options ask for; options not given keep ``base``'s (default: the proxy defaults).

    Args:
        args: parsed options.
        base: settings whose values unset options keep (a study's proxy, or full fidelity).
    """
    import dataclasses

    from autopeft.training import ProxySettings

    base = base or ProxySettings()
    names = [name for _, name, _, _ in _PROXY_OPTIONS] + ["attention_dropout"]
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    for name in ("max_train_samples", "max_eval_samples"):
        if given.get(name, 0) < 0:
            raise AutopeftError(f"--{name.replace('_', '-')} must not be negative")
        if name in given:
            given[name] = given[name] or None  # 0 = all
    if given.get("epochs", 1) <= 0:
        raise AutopeftError(f"--epochs must be positive, got {given['epochs']}")
    for name in ("batch_size", "max_length"):
        if given.get(name, 1) < 1:
            raise AutopeftError(f"--{name.replace('_', '-')} must be at least 1, got {given[name]}")
    return dataclasses.replace(base, **given)


def _search_options(search: argparse.ArgumentParser) -> None:
    """The options of ``search`` (``submit`` takes the same)."""
    search.add_argument(
        "--spec", help="a study spec YAML (see studies/) whose keys are these options; options given here win"
    )
    search.add_argument(
        "--budget",
        help="max trainable parameters of the PEFT modules: a percentage (0.5%%) or fraction (0.005) of the "
        "backbone's parameters, or a count (120k). The classification head is not counted (it is reported separately).",
    )
    search.add_argument(
        "--space", default="default", help="search space file, or a name under search_spaces/ (default: default)"
    )
    search.add_argument(
        "--objectives",
        default=defaults.OBJECTIVES,
        help=f"objectives: names, the first the score trials are selected on (default {defaults.OBJECTIVES}; "
        "metric,params selects on the task metric itself; add sparsity for a space that prunes) or a file under "
        "objectives/",
    )
    search.add_argument(
        "--sampler",
        default="botorch",
        help="botorch (default: multi-objective BO), random, tpe, nsga2, gp (Optuna's GPSampler)",
    )
    search_numbers = [
        ("--trials", int, defaults.TRIALS, "finished trials the study should hold"),
        ("--workers", int, defaults.WORKERS, "concurrent trials"),
        (
            "--confirm",
            int,
            defaults.CONFIRM,
            "confirmation runs at the end: the trials best and knee pick are trained again with another seed and "
            "picked on their mean (0: pick on single draws)",
        ),
    ]
    _training_options(search, search_numbers)
    _tracking_option(search)
    search.add_argument(
        "--select-on",
        choices=("selection", "validation"),
        default="selection",
        help="what trials are scored on: selection (default: the task's selection file, or a stratified 10%% of "
        "the train split held out, 200 to 1,000 examples; the validation split is never read) or validation "
        "(selected and reported on the same data: optimistic figures)",
    )
    search.add_argument(
        "--gpus-per-trial", type=float, default=0.0, help="GPUs per trial; fractions pack several trials on one GPU"
    )
    search.add_argument(
        "--ray-address", help="an existing Ray cluster: auto, host:port or ray://host:port (default: start a local one)"
    )
    search.add_argument(
        "--max-failures", type=int, help="stop starting trials after this many failures (default max(5, trials/4))"
    )
    search.add_argument(
        "--first-rung",
        default=str(Fraction(defaults.FIRST_RUNG).limit_denominator(64)),
        help="where every trial is first compared with its peers, a fraction of the full schedule (default "
        f"{Fraction(defaults.FIRST_RUNG).limit_denominator(64)}); raised (doubled) while no trial learns there",
    )
    search.add_argument(
        "--first-rung-cap",
        default=str(Fraction(defaults.FIRST_RUNG_CAP).limit_denominator(64)),
        help=f"the first rung is never raised past this fraction (default "
        f"{Fraction(defaults.FIRST_RUNG_CAP).limit_denominator(64)})",
    )
    search.add_argument(
        "--reduction",
        type=float,
        default=defaults.REDUCTION,
        help="successive halving: a trial goes on past a rung only within the top 1/REDUCTION of the rung's "
        f"entries; rungs lie at first-rung x REDUCTION^k of the schedule (default {defaults.REDUCTION:g})",
    )
    search.add_argument(
        "--grace",
        type=int,
        default=defaults.GRACE,
        help=f"entries a rung must have seen before a trial stops there (default {defaults.GRACE})",
    )
    search.add_argument(
        "--rung-score",
        choices=defaults.RUNG_SCORES,
        default=defaults.RUNG_SCORE,
        help="what rungs rank on: minus the selection loss (neg_loss, the default: it ranks while the metric "
        "still ties at the majority class) or the task metric",
    )
    search.add_argument(
        "--status-quo",
        default=defaults.STATUS_QUO,
        help="the configuration you would use without a search, trained beside it to the end: a baseline "
        f"name (default {defaults.STATUS_QUO}: LoRA r=8 on query and value), an export folder or a "
        "configuration file; best is never worse than it on the selection split",
    )
    search.add_argument(
        "--heartbeat-grace",
        type=float,
        default=defaults.HEARTBEAT_GRACE_S,
        help=f"seconds without a heartbeat after which a running trial counts as dead (default "
        f"{defaults.HEARTBEAT_GRACE_S:g}); workers sharing a study should use the same",
    )
    search.add_argument(
        "--study", help="study name (default: <task>-<model>-<budget>-<space>); the same name continues a study"
    )
    _runs_dir_options(search)


def _address_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS") if str(os.environ.get("RAY_ADDRESS", "")).startswith("http") else None,
        help="the Ray job server, http://HEAD:8265 (env RAY_ADDRESS when it is an http address)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = _Parser(
        prog="autopeft", description="Search PEFT configurations: a Pareto set of task metric vs trainable parameters."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    search = commands.add_parser(
        "search",
        help="run or continue a search",
        description="Run (or continue) a multi-objective search of PEFT configurations.",
    )
    _search_options(search)
    submit = commands.add_parser(
        "submit",
        help="submit a search to a Ray cluster's job server",
        description=(
            "Validate a search here, then run it as a job of a Ray cluster (its job server, the dashboard's port): "
            "the task, space and objectives files travel with it. The study needs a PostgreSQL storage and an "
            "MLflow server the cluster reaches (--storage/$AUTOPEFT_STORAGE, --tracking-uri/$MLFLOW_TRACKING_URI). "
            "With token authentication, set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH."
        ),
    )
    _address_option(submit)
    _search_options(submit)
    jobs = commands.add_parser("jobs", help="list the searches submitted to a cluster")
    _address_option(jobs)
    jobs.add_argument("--storage", default=os.environ.get("AUTOPEFT_STORAGE"), help="storage to count trials in")
    _json_option(jobs)
    logs = commands.add_parser("logs", help="show a submitted search's log")
    _address_option(logs)
    logs.add_argument("job", help="the job id (autopeft jobs lists them)")
    logs.add_argument("--follow", action="store_true", help="keep printing until the job ends")
    stop = commands.add_parser("stop", help="stop a submitted search (its finished trials are kept)")
    _address_option(stop)
    stop.add_argument("job", help="the job id")
    status = commands.add_parser(
        "status", help="a study's progress from its storage: trials by state, time left, Pareto set"
    )
    _study_options(status)
    status.add_argument("--follow", action="store_true", help="refresh until the study reaches its target")
    status.add_argument("--every", type=float, default=10.0, help="seconds between refreshes with --follow")
    _json_option(status)

    evaluate = commands.add_parser(
        "evaluate",
        aliases=["trial"],
        help="train and evaluate one configuration (on any task: transfer)",
        description=(
            "Train one configuration (no search) with each seed and print its metric (mean ± std over seeds), "
            "trainable parameters and measured sparsity. The configuration is an export folder, a JSON/YAML file "
            "with `methods` (method -> plan, as in an export's autopeft.json `config`) and `training`, or a trial "
            "of a study (--study, --pick). --task may differ from the one it was found on: that tests transfer."
        ),
    )
    evaluate.add_argument("--config", help="configuration file (JSON/YAML) or export folder")
    evaluate.add_argument("--study", help="take the configuration from this study instead (with --pick)")
    evaluate.add_argument("--pick", default="knee", help="with --study: knee (default), best or a trial number")
    _runs_dir_options(evaluate)
    _training_options(evaluate, [("--seeds", int, 1, "seeds, each a separate training run")])
    evaluate.add_argument("--out", help="also write an export folder here (autopeft.json, peft config, masks)")
    _json_option(evaluate)

    retrain = commands.add_parser(
        "retrain",
        help="retrain chosen trials at full fidelity with several seeds",
        description=(
            "Retrain trials of a study on the whole training split (default 3 epochs) with several seeds; store "
            "each run in the study, log it to MLflow under the study's parent run, and print mean ± std. "
            "`report` then shows these numbers. Runs already stored for a seed and these settings are skipped."
        ),
    )
    _study_options(retrain)
    retrain.add_argument(
        "--pick", nargs="+", default=["knee"], help="pareto, knee (default), best and/or trial numbers"
    )
    retrain.add_argument("--seeds", type=int, default=3, help="seeds per configuration (default 3)")
    retrain.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    for flag, field_name, kind, text in _PROXY_OPTIONS:
        shown = {"epochs": 3, "max_train_samples": 0}.get(field_name, "the study's")
        retrain.add_argument(flag, type=kind, help=f"{text} (default: {shown})")
    _attention_dropout_option(retrain, "the study's")
    retrain.add_argument("--data-dir", default=os.environ.get("AUTOPEFT_DATA_DIR"), help="default: the study's")
    _tracking_option(retrain)
    _json_option(retrain)

    baselines = commands.add_parser(
        "baselines",
        help="train hand-made reference configurations beside a study",
        description=(
            "Train the standard configurations (LoRA r=8 on query/value; Houlsby and Pfeiffer adapters and prefix "
            "tuning sized to the budget; full fine-tuning for reference) with each seed, store them in the study "
            "storage (study <task>-<model>-<budget>-baselines) and MLflow, and print mean ± std. "
            "`report` of a study with the same task, model and budget marks them on its plot."
        ),
    )
    baselines.add_argument("--budget", help="the budget the sizes follow (as for search)")
    baselines.add_argument("--study", help="take task, model, budget, data and training settings from this study")
    baselines.add_argument("--only", help="comma-separated baselines (default: lora,houlsby,pfeiffer,prefix,full)")
    baselines.add_argument("--learning-rate", type=float, help="one learning rate for all (default: each its usual)")
    _training_options(baselines, [("--seeds", int, 3, "seeds per baseline")], inherited="the study's")
    _tracking_option(baselines)
    _json_option(baselines)
    _runs_dir_options(baselines)

    report = commands.add_parser(
        "report",
        help="write a study's Pareto plot, trials table and summary",
        description=(
            "Write pareto.png (metric vs trainable %% on a log scale: trials, Pareto front, knee, retrained means, "
            "baselines, budget), trials.csv and summary.md to --out, and attach them to the study's MLflow parent run."
        ),
    )
    _study_options(report)
    report.add_argument("--out", required=True, help="output folder")
    _tracking_option(report)

    for name, what in (("pareto", "the Pareto set"), ("trials", "every trial")):
        sub = commands.add_parser(
            name, help=f"print {what} of a study", description=f"Print {what} of a study as a table or JSON."
        )
        _study_options(sub)
        _json_option(sub)

    export = commands.add_parser(
        "export",
        help="export a trial as a peft configuration",
        description=(
            "Write adapter_config.json (peft.PeftConfig.from_pretrained loads it) and autopeft.json. "
            "--pick knee takes the Pareto point farthest from the line through the extreme points "
            "(objectives scaled to [0, 1]): where saving more parameters starts to cost the most metric; "
            "best takes the best metric on the Pareto set."
        ),
    )
    _study_options(export)
    export.add_argument("--pick", default="knee", help="knee (default), best, or a trial number")
    export.add_argument("--out", required=True, help="output folder")

    sync = commands.add_parser(
        "sync",
        help="log to MLflow the trials it missed",
        description="Write the MLflow runs missing for a study's trials (after a tracking outage); tag its Pareto set.",
    )
    _study_options(sync)
    _tracking_option(sync)

    ui = commands.add_parser(
        "ui",
        help="start the MLflow UI over the studies",
        description="Start the MLflow UI on the runs folder's tracking store.",
    )
    ui.add_argument(
        "--runs-dir",
        default=os.environ.get("AUTOPEFT_RUNS_DIR", "autopeft-runs"),
        help="runs folder (env AUTOPEFT_RUNS_DIR)",
    )
    ui.add_argument("--tracking-uri", help="MLflow store (default: sqlite:///<runs-dir>/mlflow.db)")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    return parser


# -- commands ----------------------------------------------------------------------------------------
def _storage(args: argparse.Namespace) -> str:
    from autopeft.study import default_storage

    return args.storage or default_storage(args.runs_dir)


def _open_existing(args: argparse.Namespace):
    import optuna

    from autopeft.pareto import STATUS_QUO_SUFFIX
    from autopeft.study import connect_storage, load_study, mask_url

    storage = _storage(args)
    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file():
        raise AutopeftError(f"no study storage at {mask_url(storage)} (is --runs-dir right?)")
    name = args.study
    if name is None:
        summaries = optuna.get_all_study_summaries(connect_storage(storage))
        names = [s.study_name for s in summaries if not s.study_name.endswith(STATUS_QUO_SUFFIX)]
        if len(names) != 1:
            raise AutopeftError(f"--study is required: the storage holds {len(names)} studies ({', '.join(names)})")
        name = names[0]
    return load_study(name, storage)


def spec_file_arguments(path: str, known: set[str]) -> list[str]:
    """Turn a study spec YAML (see ``studies/``) into ``search`` options.

    Args:
        path: the spec file.
        known: option names (underscored) that ``search`` accepts.
    """
    from autopeft.schema import read_yaml

    spec = Path(path)
    if not spec.is_file():
        raise AutopeftError(f"--spec {path!r}: no such file")
    raw = read_yaml(spec) or {}
    if not isinstance(raw, dict):
        raise AutopeftError(f"{spec}: expected a mapping of search options")
    options: list[str] = []
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise AutopeftError(f"{spec}: {key}: unknown key; allowed: {', '.join(sorted(known))}")
        flag = f"--{name.replace('_', '-')}"
        if isinstance(value, bool):
            options.append(flag if value else f"--no-{flag[2:]}")
        else:
            options += [flag, str(value)]
    return options


def _one_fraction(text: str, option: str) -> float:
    from autopeft.study import parse_fractions

    values = parse_fractions(str(text), option) or ()
    if len(values) != 1:
        raise AutopeftError(f"{option}: one fraction (like 1/9 or 0.11), got {text!r}")
    return values[0]


def search_spec(args: argparse.Namespace):
    """The ``StudySpec`` that ``search`` (and ``submit``) options ask for, validated."""
    from autopeft.study import StudySpec, SuccessiveHalving

    for name in ("task", "budget"):
        if not getattr(args, name):
            raise AutopeftError(f"--{name} is required (on the command line or in --spec)")
    proxy = _proxy_settings(args)
    same_name = "task budget space objectives sampler trials workers seed data_dir runs_dir storage tracking_uri"
    same_name += " gpus_per_trial ray_address trust_remote_code select_on confirm status_quo heartbeat_grace"
    kwargs: dict[str, Any] = {name: getattr(args, name) for name in same_name.split()}
    if args.model:
        kwargs["model"] = args.model
    first, cap = (
        _one_fraction(getattr(args, name), f"--{name.replace('_', '-')}") for name in ("first_rung", "first_rung_cap")
    )
    rungs = SuccessiveHalving(first=first, cap=cap, reduction=args.reduction, grace=args.grace, score=args.rung_score)
    return StudySpec(study_name=args.study, proxy=proxy, rungs=rungs, **kwargs)


def cmd_search(args: argparse.Namespace) -> int:
    """``autopeft search``."""
    from rich.console import Console

    from autopeft.display import SearchDisplay, print_pareto
    from autopeft.pareto import not_learnt_warning
    from autopeft.search import run_search
    from autopeft.service import check_confined

    spec = search_spec(args)
    check_confined(spec)  # a submitted job reads spec files only from the folder it shipped
    console = Console(stderr=True)
    display = SearchDisplay(console)
    try:
        summary = run_search(
            spec,
            max_failures=args.max_failures,
            on_start=display.start,
            on_trial_end=display.trial_ended,
            on_confirmation=display.confirmed,
            on_event=display.event,
        )
    finally:
        display.stop()
    print_pareto(Console(), summary.bound.study, title=f"Pareto set of {summary.bound.study.study_name}")
    name = summary.bound.study.study_name
    if summary.unconfirmed:
        runs = len(summary.confirmations)
        picks = ", ".join(f"trial {n}" for n in summary.unconfirmed)
        verb = "picks {} are" if len(summary.unconfirmed) > 1 else "pick {} is"
        console.print(
            f"[yellow]warning[/]: after {runs} confirmation run{'s' * (runs != 1)} the {verb.format(picks)} "
            "unconfirmed (on one seed: a confirmation moved the pick, or failed); the same command confirms it"
        )
    unlearnt = not_learnt_warning(summary.bound.study)
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
        f"({summary.failed_now} failed in this run) "
        f"in {summary.seconds / 60:.1f} min. "
        f"Next: autopeft export --study {name} --runs-dir {args.runs_dir} --pick knee --out best/"
    )
    return 0


_NOT_SHIPPED = {"spec", "storage", "tracking_uri", "ray_address", "runs_dir", "address", "help", "study"}
"""Search options a submitted job does not take from the command line (the cluster's or set by ``submit``)."""


def _entrypoint_options(args: argparse.Namespace, shipped: dict[str, str], study: str) -> list[str]:
    """A submitted job's search options: each option given (or set by --spec), paths pointing into the shipment."""
    parser = argparse.ArgumentParser(add_help=False)
    _search_options(parser)
    options = ["--study", study]
    for action in parser._actions:  # argparse lists its actions nowhere public
        if action.dest in _NOT_SHIPPED or not action.option_strings:
            continue
        value = shipped.get(action.dest, getattr(args, action.dest))
        if value is None or (value == action.default and action.dest not in shipped):
            continue
        flag = action.option_strings[0]
        if isinstance(action, argparse.BooleanOptionalAction):
            options.append(flag if value else f"--no-{flag[2:]}")
        else:
            options += [flag, str(value)]
    return options


def cmd_submit(args: argparse.Namespace) -> int:
    """``autopeft submit``: validate the search here, then run it as a job of a Ray cluster."""
    import tempfile

    from autopeft.service import require_cluster_stores, ship, submit
    from autopeft.study import bind

    if not args.address:
        raise AutopeftError("--address is required: the Ray job server, http://HEAD:8265")
    spec = search_spec(args)
    require_cluster_stores(args.storage, args.tracking_uri)
    bind(spec)  # the same validation as search: task, space, objectives, budget, model
    with tempfile.TemporaryDirectory(prefix="autopeft-submit-") as folder:
        shipped = ship(spec, Path(folder))  # a task's data outside its folder gets a one-line error here
        if spec.data_dir:
            shipped["data_dir"] = spec.data_dir  # absolute: the same folder on every node
        if Path(spec.model).exists():
            shipped["model"] = str(Path(spec.model).resolve())  # a folder on every node (else a hub id)
        job = submit(args.address, spec, _entrypoint_options(args, shipped, spec.name), Path(folder))
    print(f"submitted job {job} running study {spec.name}")
    print(f"follow it: autopeft logs {job} --follow --address {args.address}")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    """``autopeft jobs``: the searches submitted to a cluster."""
    from rich.console import Console
    from rich.table import Table

    from autopeft.service import list_jobs
    from autopeft.study import dumps

    if not args.address:
        raise AutopeftError("--address is required: the Ray job server, http://HEAD:8265")
    rows = list_jobs(args.address, args.storage)
    if args.json:
        print(dumps(rows))
        return 0
    table = Table(title=f"autopeft jobs on {args.address}", title_justify="left")
    for column in ("job", "study", "state", "trials", "pareto", "started"):
        table.add_column(column)
    for row in rows:
        trials = f"{row['finished']}/{row['target']}" if row["finished"] is not None else f"?/{row['target']}"
        pareto = str(row["pareto_size"]) if row["pareto_size"] is not None else "?"
        table.add_row(row["job"], row["study"], row["state"], trials, pareto, row["started"] or "")
    Console().print(table)
    if rows and rows[0]["finished"] is None:
        Console(stderr=True).print("trials: pass --storage (or $AUTOPEFT_STORAGE) of the jobs' store to count them")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    """``autopeft logs``: a submitted search's log."""
    from autopeft.service import job_logs

    if not args.address:
        raise AutopeftError("--address is required: the Ray job server, http://HEAD:8265")
    for chunk in job_logs(args.address, args.job, args.follow):
        print(chunk, end="", flush=True)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    """``autopeft stop``: stop a submitted search; its finished trials stay in the study."""
    from autopeft.service import stop_job

    if not args.address:
        raise AutopeftError("--address is required: the Ray job server, http://HEAD:8265")
    state = stop_job(args.address, args.job)
    print(f"job {args.job}: {state}; the study keeps its finished trials (submit the same search to continue it)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """``autopeft status``: a study's progress read from its storage alone (beside a local or submitted search)."""
    import datetime
    import time

    from rich.console import Console

    from autopeft.display import pareto_table
    from autopeft.service import study_status
    from autopeft.study import dumps

    console = Console()
    while True:
        study = _open_existing(args)
        status = study_status(study)
        if args.json:
            print(dumps(status), flush=True)
        else:
            left = status["seconds_left"]
            eta = "-:--:--" if left is None else str(datetime.timedelta(seconds=int(left)))
            done = status["finished"] + status["pruned"]
            console.print(
                f"[bold]{status['study']}[/]: {done}/{status['target']} trials done ({status['finished']} finished, "
                f"{status['pruned']} stopped early), {status['running']} running, {status['failed']} failed; "
                f"{eta} left"
            )
            console.print(pareto_table(study, "current Pareto set"))
        if not args.follow or status["finished"] + status["pruned"] >= status["target"]:
            return 0
        time.sleep(max(1.0, args.every))


def _evaluated_config(args: argparse.Namespace):
    """The configuration ``evaluate`` trains, with the model/task it came with: from a file, an export or a study."""
    from autopeft.export import read_config
    from autopeft.models import resolve_backbone
    from autopeft.pareto import pick_trial
    from autopeft.study import spec_of, study_backbone, trial_config

    if bool(args.config) == bool(args.study):
        raise AutopeftError("give either --config (a file or export folder) or --study (with --pick)")
    if args.study:
        study = _open_existing(args)
        trial = pick_trial(study, args.pick)
        spec = spec_of(study)
        origin = {
            "model": study_backbone(spec),
            "task": spec["task"],
            "source": f"{study.study_name} trial {trial.number}",
        }
        return trial_config(trial), origin
    config, document = read_config(args.config)
    recorded = document.get("model_path") or document.get("model")
    model = resolve_backbone(recorded, document.get("model")) if recorded else None
    return config, {"model": model, "task": document.get("task"), "source": str(args.config)}


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``autopeft evaluate`` (alias ``trial``): one configuration, trained with each seed and evaluated."""
    from rich.console import Console

    from autopeft.evaluation import RunPlan, evaluate_config
    from autopeft.methods.build import check_config
    from autopeft.models import backbone_info, default_model
    from autopeft.study import dumps
    from autopeft.tasks import get_task, task_reference

    if args.seeds < 1:
        raise AutopeftError(f"--seeds must be at least 1, got {args.seeds}")
    config, origin = _evaluated_config(args)
    task_ref = args.task or origin.get("task")
    if not task_ref:
        raise AutopeftError("--task is required (the configuration names no task)")
    settings = _proxy_settings(args)
    task = get_task(task_ref)
    model = args.model or origin.get("model") or default_model()
    info = backbone_info(model, task.num_labels, args.trust_remote_code)
    config = check_config(config, info, source=origin["source"])
    seeds = [args.seed + k for k in range(args.seeds)]
    console = Console(stderr=True)
    cache_dir = str(Path(args.runs_dir).resolve() / "cache" / "tokenized")
    plan = RunPlan(model, task_reference(task_ref), args.data_dir, settings, cache_dir)
    console.print(f"training {', '.join(config.methods)} on {task.name} with {len(seeds)} seed(s) ...")
    summary = evaluate_config(
        config, info, plan, seeds, args.out, origin["source"], lambda seed, r: console.print(_run_line(task.metric, r))
    )
    if args.json:
        print(dumps(summary))
        return 0
    _print_seed_table(f"{', '.join(config.methods)} on {task.name}", task.metric, summary)
    return 0


def _run_line(metric: str, result: dict) -> str:
    if "fail_reason" in result:
        return f"seed {result['seed']}: [red]failed[/]: {result['fail_reason']}"
    return f"seed {result['seed']}: {metric} {result['metric']:.4f} ({result['seconds']:.0f} s)"


def _print_seed_table(title: str, metric: str, summary: dict) -> None:
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


def _seed_progress(total: int, what: str):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    progress = Progress(*columns, console=Console(stderr=True))
    return progress, progress.add_task(what, total=total)


def cmd_retrain(args: argparse.Namespace) -> int:
    """``autopeft retrain``: chosen trials at full fidelity, several seeds, stored and logged."""
    import dataclasses

    from rich.console import Console
    from rich.table import Table

    from autopeft.evaluation import require_validation
    from autopeft.retrain import chosen_trials, retrain
    from autopeft.study import dumps, spec_of
    from autopeft.tasks import get_task
    from autopeft.training import ProxySettings, full_fidelity

    if args.seeds < 1:
        raise AutopeftError(f"--seeds must be at least 1, got {args.seeds}")
    study = _open_existing(args)
    spec = spec_of(study)
    require_validation(get_task(spec["task"]), args.data_dir or spec.get("data_dir"), "retrain")
    proxy = ProxySettings(**spec["proxy"])
    settings = _proxy_settings(args, full_fidelity(proxy))
    seeds = [args.seed + k for k in range(args.seeds)]
    trials = chosen_trials(study, args.pick)
    progress, task_id = _seed_progress(len(trials) * len(seeds), "retraining")
    with progress:
        results = retrain(
            study,
            trials,
            seeds,
            settings,
            args.runs_dir,
            args.data_dir,
            args.tracking_uri,
            on_run=lambda trial, seed, result: progress.advance(task_id),
        )
    if args.json:
        print(dumps([dataclasses.asdict(r) for r in results]))
        return 0
    table = Table(title=f"Retrained trials of {study.study_name} ({results[0].settings})", title_justify="left")
    split = spec.get("select_on", "validation")
    for column in ("trial", f"search metric ({split})", "validation, retrained (mean ± std)", "seeds", "failed"):
        table.add_column(column, justify="right")
    for r in results:
        search = f"{r.search_metric:.4f}" if r.search_metric is not None else ""
        retrained = f"{r.summary.mean:.4f} ± {r.summary.std:.4f}" if r.summary else "all failed"
        table.add_row(str(r.trial), search, retrained, str(r.summary.seeds if r.summary else 0), str(r.failed))
    Console().print(table)
    return 0


def cmd_baselines(args: argparse.Namespace) -> int:
    """``autopeft baselines``: the hand-made configurations, sized to the budget, beside the study."""
    import dataclasses

    from rich.console import Console
    from rich.table import Table

    from autopeft.baselines import BASELINES, run_baselines_beside
    from autopeft.models import default_model
    from autopeft.study import default_tracking_uri, dumps, mask_url, spec_of
    from autopeft.tasks import get_task
    from autopeft.training import ProxySettings

    spec, base = {}, None
    if args.study:
        spec = spec_of(_open_existing(args))
        base = ProxySettings(**spec["proxy"])
    task_ref, budget_text = args.task or spec.get("task"), args.budget or spec.get("budget")
    if not task_ref or not budget_text:
        raise AutopeftError("--task and --budget are required (or --study to take them from a study)")
    if args.seeds < 1:
        raise AutopeftError(f"--seeds must be at least 1, got {args.seeds}")
    names = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else list(BASELINES)
    settings = _proxy_settings(args, base)
    task = get_task(task_ref)
    seeds = [args.seed + k for k in range(args.seeds)]
    progress, task_id = _seed_progress(len(names) * len(seeds), "baselines")
    with progress:
        name, results = run_baselines_beside(
            task_ref, budget_text, args.model or spec.get("model") or default_model(), names, settings, seeds,
            _storage(args), args.runs_dir, args.tracking_uri, args.data_dir or spec.get("data_dir"),
            args.learning_rate, args.trust_remote_code,
            on_run=lambda baseline, seed, result: progress.advance(task_id),
        )  # fmt: skip
    uri = args.tracking_uri or default_tracking_uri(args.runs_dir)
    if args.json:
        print(dumps([dataclasses.asdict(r) for r in results]))
        return 0
    table = Table(title=f"Baselines {name} ({results[0].settings if results else ''})", title_justify="left")
    for column in ("baseline", f"{task.metric} (mean ± std)", "seeds", "trainable", "% of backbone", "within budget"):
        table.add_column(column, justify="left" if column == "baseline" else "right")
    for r in results:
        metric = f"{r.summary.mean:.4f} ± {r.summary.std:.4f}" if r.summary else "all failed"
        table.add_row(
            r.label,
            metric,
            str(r.summary.seeds if r.summary else 0),
            f"{r.trainable_params:,}",
            f"{100 * r.trainable_fraction:.3f}",
            "no" if r.over_budget else "yes",
        )
    Console().print(table)
    Console(stderr=True).print(f"stored in study {name} ({mask_url(_storage(args))}) and MLflow {mask_url(uri)}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``autopeft report``: Pareto plot, trials table and summary, also attached to MLflow."""
    from autopeft.report import finished_count, write_report
    from autopeft.study import default_tracking_uri, spec_of
    from autopeft.tracking import Tracker

    study = _open_existing(args)
    if not finished_count(study):
        raise AutopeftError(f"study {study.study_name!r} has no finished trial yet: nothing to report")
    uri = args.tracking_uri or default_tracking_uri(args.runs_dir)
    artifacts = Path(args.runs_dir).resolve() / "mlartifacts"
    tracker = Tracker(uri, study.study_name, artifacts, spec_of(study), attach=True)
    paths = write_report(study, _storage(args), args.out, tracker)
    logged = "; attached to the MLflow parent run" if tracker.enabled else "; MLflow unreachable, not attached"
    print(f"wrote {', '.join(str(p) for p in paths.values())}{logged}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """``autopeft pareto`` and ``autopeft trials``."""
    from rich.console import Console

    from autopeft.display import print_pareto, print_trials
    from autopeft.pareto import confirmation_runs, pareto_trials, status_quo_run
    from autopeft.results import validation_results
    from autopeft.study import dumps, status_quo_record, trial_record

    study = _open_existing(args)
    validation, confirmations = validation_results(study), confirmation_runs(study)
    chosen = pareto_trials(study) if args.command == "pareto" else study.get_trials(deepcopy=False)
    records = [trial_record(t, validation.get(t.number), confirmations.get(t.number)) for t in chosen]
    quo = status_quo_run(study)
    if quo is not None and args.command == "pareto":
        records.append(status_quo_record(quo))  # beside the Pareto set, labelled: "trial": "status_quo"
    if args.command == "pareto":
        for record in records:
            record.pop("state", None)
    if args.json:
        print(dumps(records))
    elif args.command == "pareto":
        print_pareto(Console(), study, title=f"Pareto set of {study.study_name}")
    else:
        print_trials(Console(), study)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``autopeft export``."""
    from autopeft.export import export_trial

    summary = export_trial(_open_existing(args), args.pick, args.out)
    if summary["status_quo"]:
        print(f"{summary['verdict']}; exported the status quo to {args.out}")
        return 0
    validation = summary.get("validation")
    reported = (
        f", {validation['mean']:.4f} ± {validation['std']:.4f} on the validation split ({validation['seeds']} seeds)"
        if validation
        else ", not retrained yet (autopeft retrain gives its validation figure)"
    )
    print(
        f"exported trial {summary['trial']} of {summary['study']} ({summary['metric_name']} {summary['metric']:.4f} "
        f"on the {summary['metric_split']} split{reported}; {summary['trainable_params']:,} trainable parameters) "
        f"to {args.out}"
    )
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    """``autopeft sync``."""
    from autopeft.study import default_tracking_uri, mask_url, spec_of
    from autopeft.tracking import Tracker

    study = _open_existing(args)
    uri = args.tracking_uri or default_tracking_uri(args.runs_dir)
    artifacts = Path(args.runs_dir).resolve() / "mlartifacts"
    tracker = Tracker(uri, study.study_name, artifacts, spec_of(study))
    logged = tracker.sync(study)
    if not tracker.enabled:
        raise AutopeftError(f"MLflow at {mask_url(uri)} is unreachable; nothing was synced")
    tracker.finish()
    print(f"logged {logged} missing trial runs of {study.study_name} to {mask_url(uri)}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """``autopeft ui``: the MLflow UI, one worker, on 127.0.0.1 unless ``--host`` says otherwise."""
    import shutil

    from autopeft.study import default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri(args.runs_dir)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise AutopeftError(f"no MLflow store at {uri} (run a search first, or pass --runs-dir)")
    mlflow = shutil.which("mlflow")
    if mlflow is None:
        raise AutopeftError("the mlflow command is not installed")
    os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    artifacts = Path(args.runs_dir).resolve() / "mlartifacts"
    command = [
        mlflow,
        "server",
        "--backend-store-uri",
        uri,
        "--default-artifact-root",
        artifacts.as_uri(),
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--workers",
        "1",
    ]
    # MLflow 3's UI opens on its GenAI views unless told otherwise (the experiment's kind tag is not enough).
    url = f"http://{args.host}:{args.port}/#/experiments?workflowType=machine_learning"
    print(f"MLflow UI on {url} (Ctrl-C to stop)", file=sys.stderr)
    os.execv(mlflow, command)
    return 0  # not reached


COMMANDS = {
    "search": cmd_search,
    "evaluate": cmd_evaluate,
    "trial": cmd_evaluate,
    "retrain": cmd_retrain,
    "baselines": cmd_baselines,
    "report": cmd_report,
    "pareto": cmd_list,
    "trials": cmd_list,
    "export": cmd_export,
    "sync": cmd_sync,
    "ui": cmd_ui,
    "submit": cmd_submit,
    "jobs": cmd_jobs,
    "logs": cmd_logs,
    "stop": cmd_stop,
    "status": cmd_status,
}


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("mlflow", "alembic", "ray", "optuna"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _store_outage(exc: BaseException) -> str | None:
    """The first line of a database error behind ``exc`` (the storage server stopped or unreachable), else ``None``."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    seen: BaseException | None = exc
    while seen is not None:  # Optuna wraps the driver's error (StorageInternalError)
        if isinstance(seen, OperationalError | InterfaceError):
            return (str(seen.orig or seen).strip().splitlines() or [type(seen).__name__])[0][:200]
        seen = seen.__cause__ or seen.__context__
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``autopeft`` command.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    _quiet_libraries()
    try:
        if getattr(args, "spec", None):
            # Options from the file come first, so the same options on the command line win.
            known = {key for key in vars(args) if key not in ("command", "spec")}
            args = parser.parse_args([args.command, *spec_file_arguments(args.spec, known - {"address"}), *argv[1:]])
        return COMMANDS[args.command](args)
    except SearchAborted as exc:
        print(f"autopeft: search aborted: {exc}", file=sys.stderr)
        return 1
    except AutopeftError as exc:
        print(f"autopeft: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a bug: say so in one line; AUTOPEFT_DEBUG=1 shows the traceback
        if os.environ.get("AUTOPEFT_DEBUG"):
            raise
        lost = _store_outage(exc)
        if lost is not None:
            print(
                f"autopeft: stopped: the study's storage went away ({lost}); everything it stored is kept: run the "
                "same command again to continue",
                file=sys.stderr,
            )
            return 1
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(
            f"autopeft: internal error: {type(exc).__name__}: {first} (AUTOPEFT_DEBUG=1 shows where)", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        print("autopeft: interrupted; finished trials are kept, run the same command to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
