"""The ``autopeft`` command: it only dispatches. Each verb is a :class:`~autopeft.cli.base.Command` in the module
of its family, listed once in :data:`COMMANDS`."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Sequence

from autopeft.cli.base import Command, Parser
from autopeft.cli.predict import Predict
from autopeft.cli.results import Export, Pareto, Report, Sync, Trials
from autopeft.cli.search import Search, Submit
from autopeft.cli.service import Jobs, Logs, Status, Stop
from autopeft.cli.training import Baselines, Evaluate, Retrain
from autopeft.cli.ui import Ui
from autopeft.errors import AutopeftError, SearchAborted

COMMANDS: tuple[type[Command], ...] = (
    Search,
    Submit,
    Jobs,
    Logs,
    Stop,
    Status,
    Evaluate,
    Retrain,
    Baselines,
    Pareto,
    Trials,
    Export,
    Predict,
    Report,
    Sync,
    Ui,
)


def build_parser() -> Parser:
    """The argument parser of every verb in :data:`COMMANDS`."""
    parser = Parser(
        prog="autopeft", description="Search PEFT configurations: a Pareto set of task metric vs trainable parameters."
    )
    verbs = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command_class in COMMANDS:
        command = command_class()
        sub = verbs.add_parser(
            command.name, aliases=list(command.aliases), help=command.help, description=command.description
        )
        command.add_arguments(sub)
        sub.set_defaults(command_object=command)
    return parser


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
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    _quiet_libraries()
    try:
        return args.command_object.take_action(args)
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
