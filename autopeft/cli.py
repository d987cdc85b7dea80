"""The ``autopeft`` command line: thin wrappers that parse, call the library and print."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence
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
    parser.add_argument("--storage", help="Optuna storage URL (default: sqlite:///<runs-dir>/optuna.db)")


def _study_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", help="study name (default: the only study in the storage)")
    _runs_dir_options(parser)


def _training_options(parser: argparse.ArgumentParser, numeric: list[tuple]) -> None:
    """Options of the model, the data and the proxy training, shared by ``search`` and ``trial``."""
    parser.add_argument("--task", help="task name: rte, mrpc, cola, sst2, stsb")
    parser.add_argument("--model", help="HF model id or local folder (default: the packaged all-MiniLM-L6-v2)")
    numeric = [
        *numeric,
        ("--epochs", float, defaults.EPOCHS, "proxy training epochs, fractions allowed"),
        ("--max-train-samples", int, defaults.MAX_TRAIN_SAMPLES, "training examples per trial (0 = all)"),
        ("--max-eval-samples", int, 0, "dev examples evaluated (0 = all)"),
        ("--batch-size", int, defaults.BATCH_SIZE, "training batch size"),
        ("--max-length", int, defaults.MAX_LENGTH, "truncation length in tokens"),
    ]
    for flag, kind, default, text in numeric:
        parser.add_argument(flag, type=kind, default=default, help=f"{text} (default {default})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("AUTOPEFT_DATA_DIR"),
        help="local GLUE folder (env AUTOPEFT_DATA_DIR); default: download with `datasets`",
    )
    parser.add_argument(
        "--trust-remote-code",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="allow the model's own code from its repository (off by default)",
    )


def _proxy_settings(args: argparse.Namespace):
    """The proxy settings the training options ask for."""
    from autopeft.training import ProxySettings

    for name in ("max_train_samples", "max_eval_samples"):
        if getattr(args, name) < 0:
            raise AutopeftError(f"--{name.replace('_', '-')} must not be negative")
    if args.epochs <= 0:
        raise AutopeftError(f"--epochs must be positive, got {args.epochs}")
    return ProxySettings(
        epochs=args.epochs,
        max_train_samples=args.max_train_samples or None,
        max_eval_samples=args.max_eval_samples or None,
        batch_size=args.batch_size,
        max_length=args.max_length,
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
        default="metric,params",
        help="objectives: names (metric,params or metric,params,sparsity) or a file under objectives/",
    )
    search.add_argument(
        "--sampler",
        default="botorch",
        help="botorch (default: multi-objective BO), random, tpe, nsga2, gp (Optuna's GPSampler)",
    )
    search_numbers = [
        ("--trials", int, defaults.TRIALS, "finished trials the study should hold"),
        ("--workers", int, defaults.WORKERS, "concurrent trials"),
    ]
    _training_options(search, search_numbers)
    search.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///<runs-dir>/mlflow.db)")
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
        "--early-stopping",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="stop trials dominated at 1/3 and 2/3 of their training (multi-objective successive halving; "
        "off by default: its rung evaluations cost more than it saves so far); stopped trials are kept as pruned",
    )
    search.add_argument(
        "--early-stopping-grace",
        type=int,
        default=defaults.GRACE,
        help=f"trials a rung must have seen before any stops there (default {defaults.GRACE})",
    )
    search.add_argument(
        "--early-stopping-reduction",
        type=float,
        default=defaults.REDUCTION,
        help="a trial stops when at least 1/REDUCTION of a rung's trials dominate it "
        f"(default {defaults.REDUCTION:g}: successive halving's eta)",
    )
    search.add_argument(
        "--study", help="study name (default: <task>-<model>-<budget>-<space>); the same name continues a study"
    )
    _runs_dir_options(search)

    trial = commands.add_parser(
        "trial",
        help="train and evaluate one configuration",
        description=(
            "Train one configuration with the proxy settings (no search) and print its metrics, trainable "
            "parameters and measured sparsity. --config takes a JSON/YAML file with `methods` (method -> plan, "
            "as in an export's autopeft.json `config`) and `training`, or an export folder."
        ),
    )
    trial.add_argument("--config", required=True, help="configuration file (JSON/YAML) or export folder")
    _training_options(trial, [])
    trial.add_argument("--out", help="also write an export folder here (autopeft.json, peft config, masks)")
    trial.add_argument("--json", action="store_true", help="print JSON instead of a table")

    for name, what in (("pareto", "the Pareto set"), ("trials", "every trial")):
        sub = commands.add_parser(
            name, help=f"print {what} of a study", description=f"Print {what} of a study as a table or JSON."
        )
        _study_options(sub)
        sub.add_argument("--json", action="store_true", help="print JSON instead of a table")

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
    sync.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///<runs-dir>/mlflow.db)")

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

    from autopeft.study import connect_storage, load_study, mask_url

    storage = _storage(args)
    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file():
        raise AutopeftError(f"no study storage at {mask_url(storage)} (is --runs-dir right?)")
    name = args.study
    if name is None:
        names = [s.study_name for s in optuna.get_all_study_summaries(connect_storage(storage))]
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
    import yaml

    spec = Path(path)
    if not spec.is_file():
        raise AutopeftError(f"--spec {path!r}: no such file")
    try:
        raw = yaml.safe_load(spec.read_text()) or {}
    except yaml.YAMLError as exc:
        raise AutopeftError(f"{spec}: malformed YAML: {getattr(exc, 'problem', exc)}") from None
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


def cmd_search(args: argparse.Namespace) -> int:
    """``autopeft search``."""
    from rich.console import Console

    for name in ("task", "budget"):
        if not getattr(args, name):
            raise AutopeftError(f"--{name} is required (on the command line or in --spec)")
    from autopeft.execution import EarlyStopping
    from autopeft.report import SearchDisplay, print_pareto
    from autopeft.search import run_search
    from autopeft.study import StudySpec

    proxy = _proxy_settings(args)
    same_name = "task budget space objectives sampler trials workers seed data_dir runs_dir storage tracking_uri"
    same_name += " gpus_per_trial ray_address trust_remote_code"
    kwargs: dict[str, Any] = {name: getattr(args, name) for name in same_name.split()}
    if args.model:
        kwargs["model"] = args.model
    policy = EarlyStopping(grace=args.early_stopping_grace, reduction=args.early_stopping_reduction)  # validates
    early_stopping = policy if args.early_stopping else None
    spec = StudySpec(study_name=args.study, proxy=proxy, early_stopping=early_stopping, **kwargs)
    console = Console(stderr=True)
    display = SearchDisplay(console)
    try:
        summary = run_search(
            spec, max_failures=args.max_failures, on_start=display.start, on_trial_end=display.trial_ended
        )
    finally:
        display.stop()
    print_pareto(Console(), summary.bound.study, title=f"Pareto set of {summary.bound.study.study_name}")
    name = summary.bound.study.study_name
    console.print(
        f"{summary.finished} finished trials, {summary.pruned} stopped early ({summary.failed_now} failed in this run) "
        f"in {summary.seconds / 60:.1f} min. "
        f"Next: autopeft export --study {name} --runs-dir {args.runs_dir} --pick knee --out best/"
    )
    return 0


def cmd_trial(args: argparse.Namespace) -> int:
    """``autopeft trial``: one configuration, trained and evaluated without a search."""
    import tempfile

    from rich.console import Console
    from rich.table import Table

    from autopeft.export import read_config, write_export
    from autopeft.methods.build import check_config
    from autopeft.models import backbone_info, default_model
    from autopeft.study import default_runs_dir, dumps
    from autopeft.tasks import get_task
    from autopeft.training import ProxyRequest, run_proxy_trial

    if not args.task:
        raise AutopeftError("--task is required")
    settings = _proxy_settings(args)
    task = get_task(args.task)
    config, _ = read_config(args.config)
    model = args.model or default_model()
    info = backbone_info(model, task.num_labels, args.trust_remote_code)
    config = check_config(config, info, source=args.config)
    cache_dir = str(Path(default_runs_dir()).resolve() / "cache" / "tokenized")
    with tempfile.TemporaryDirectory() as scratch:
        masks_path = str(Path(args.out or scratch) / "masks.npz") if "pruning" in config.methods else None
        request = ProxyRequest(
            model, task.name, args.data_dir, config.to_dict(), settings, args.seed, 0, cache_dir, (), masks_path
        )
        Console(stderr=True).print(f"training {', '.join(config.methods)} on {task.name} ...")
        result = run_proxy_trial(request)
        count = result["trainable_params"]  # counted on the built model, equal to the prediction
        summary = {
            "task": task.name,
            "metric_name": task.metric,
            "metric": result["metric"],
            "metrics": result["metrics"],
            "trainable_params": count,
            "trainable_fraction": count / info.backbone_params,
            "target_sparsity": result["target_sparsity"],
            "sparsity": result["sparsity"],
            "steps": result["steps"],
            "seconds": result["seconds"],
            "method_report": result["method_report"],
        }
        if args.out:
            write_export(args.out, config, info, {**summary, "source": str(args.config)}, result["steps"], masks_path)
    if args.json:
        print(dumps(summary))
        return 0
    table = Table(title=f"{', '.join(config.methods)} on {task.name}")
    table.add_column("field")
    table.add_column("value", justify="right")
    for key in ("metric", "trainable_params", "trainable_fraction", "target_sparsity", "sparsity", "steps", "seconds"):
        value = summary[key]
        shown = f"{value:.4f}" if isinstance(value, float) else f"{value:,}"
        table.add_row(task.metric if key == "metric" else key, shown)
    Console().print(table)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """``autopeft pareto`` and ``autopeft trials``."""
    from rich.console import Console

    from autopeft.pareto import pareto_trials
    from autopeft.report import print_pareto, print_trials
    from autopeft.study import dumps, trial_record

    study = _open_existing(args)
    if args.command == "pareto":
        records = [trial_record(t) for t in pareto_trials(study)]
        for record in records:
            record.pop("state", None)
    else:
        records = [trial_record(t) for t in study.get_trials(deepcopy=False)]
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
    print(
        f"exported trial {summary['trial']} of {summary['study']} ({summary['metric_name']} {summary['metric']:.4f}, "
        f"{summary['trainable_params']:,} trainable parameters) to {args.out}"
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
    print(f"MLflow UI on http://{args.host}:{args.port} (Ctrl-C to stop)", file=sys.stderr)
    os.execv(mlflow, command)
    return 0  # not reached


COMMANDS = {
    "search": cmd_search,
    "trial": cmd_trial,
    "pareto": cmd_list,
    "trials": cmd_list,
    "export": cmd_export,
    "sync": cmd_sync,
    "ui": cmd_ui,
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
            args = parser.parse_args(["search", *spec_file_arguments(args.spec, known), *argv[1:]])
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
