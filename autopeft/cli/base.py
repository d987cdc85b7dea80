"""What every command shares: the command class, one-line errors, the options several commands take, and the
options generated from the study spec's declarations (:mod:`autopeft.study.spec`)."""

from __future__ import annotations

import argparse
import os
from fractions import Fraction
from pathlib import Path
from typing import Any, NoReturn

from autopeft.errors import AutopeftError
from autopeft.runs_dir import ENV as RUNS_DIR_ENV
from autopeft.runs_dir import RunsDir, default_runs_dir


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage dump), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


class Command:
    """A verb of the command line: its options beside its action (as Optuna's commands are).

    Attributes:
        name: the verb.
        help: one line for ``autopeft --help``.
        description: the verb's ``--help`` text.
        aliases: other names of the verb.
    """

    name: str = ""
    help: str = ""
    description: str | None = None
    aliases: tuple[str, ...] = ()

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare the verb's options."""

    def take_action(self, args: argparse.Namespace) -> int:
        """Run the verb; its exit status."""
        raise NotImplementedError


# -- options several verbs take ------------------------------------------------------------------------------
def runs_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runs-dir",
        default=default_runs_dir(),
        help=f"folder holding everything studies write (env {RUNS_DIR_ENV}; default ./autopeft-runs)",
    )


def storage_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        default=os.environ.get("AUTOPEFT_STORAGE"),
        help="Optuna storage URL (env AUTOPEFT_STORAGE; default: sqlite:///<runs-dir>/optuna.db)",
    )


def tracking_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow tracking URI (env MLFLOW_TRACKING_URI; default: sqlite:///<runs-dir>/mlflow.db)",
    )


def json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def study_options(parser: argparse.ArgumentParser) -> None:
    """``--study`` of an existing study, and where it is stored."""
    parser.add_argument("--study", help="study name (default: the only study in the storage)")
    runs_dir_option(parser)
    storage_option(parser)


def storage_of(args: argparse.Namespace) -> str:
    """The storage URL the options name (default: the runs folder's SQLite store)."""
    return args.storage or RunsDir.at(args.runs_dir).storage


def tracking_of(args: argparse.Namespace) -> str:
    """The tracking URI the options name (default: the runs folder's SQLite store)."""
    return getattr(args, "tracking_uri", None) or RunsDir.at(args.runs_dir).tracking_uri


def open_view(args: argparse.Namespace):
    """The view of the study ``--study`` names (or the only one in the storage), or a one-line error."""
    import optuna

    from autopeft.study import STATUS_QUO_SUFFIX, StudyView, connect_storage, mask_url

    storage = storage_of(args)
    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file():
        raise AutopeftError(f"no study storage at {mask_url(storage)} (is --runs-dir right?)")
    name = args.study
    if name is None:
        summaries = optuna.get_all_study_summaries(connect_storage(storage))
        names = [s.study_name for s in summaries if not s.study_name.endswith(STATUS_QUO_SUFFIX)]
        if len(names) != 1:
            raise AutopeftError(f"--study is required: the storage holds {len(names)} studies ({', '.join(names)})")
        name = names[0]
    return StudyView.load(name, storage)


# -- options from the spec's declarations ---------------------------------------------------------------------
def spec_option(parser: argparse.ArgumentParser, path: tuple[str, ...], option, info, shown: Any) -> None:
    """Add the flag a spec field declares (its value left ``None`` unless given).

    Args:
        parser: the verb's parser.
        path: the field's path in the spec.
        option: its :class:`autopeft.study.spec.Option`.
        info: its pydantic field.
        shown: the default said in the help (``None``: none said).
    """
    from autopeft.study.spec import field_kind, flag_of

    kind, choices = field_kind(info)
    flag = flag_of(path[-1], option)
    text = option.help + (f" (default: {shown})" if shown is not None else "")
    if option.env:
        text += f" (env {option.env})"
    dest = "__".join(path)
    if kind is bool:
        parser.add_argument(flag, *option.aliases, dest=dest, action=argparse.BooleanOptionalAction, help=text)
    else:
        metavar = None if choices else flag.removeprefix("--").upper().replace("-", "_")
        parser.add_argument(flag, *option.aliases, dest=dest, type=kind, choices=choices, metavar=metavar, help=text)


def shown_default(info) -> Any:
    """How a field's default is shown in ``--help`` (fractions as ``1/9``; zero for "all")."""
    from pydantic_core import PydanticUndefined

    default = info.default
    if default is PydanticUndefined or default is None:
        return None
    if isinstance(default, float) and 0 < default < 1:
        return str(Fraction(default).limit_denominator(64))
    return default


def given_spec_options(args: argparse.Namespace) -> dict[str, Any]:
    """The spec fields given on the command line, as flat option names (``max-train-samples``...)."""
    from autopeft.study.spec import flag_of, paths

    given = {}
    for path, option in paths():
        value = getattr(args, "__".join(path), None)
        if value is not None:
            given[flag_of(path[-1], option).removeprefix("--")] = value
    return given
