"""``ui``: the MLflow UI over the runs folder's tracking store."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from autopeft.cli.base import Command, runs_dir_option
from autopeft.errors import AutopeftError


class Ui(Command):
    name = "ui"
    help = "start the MLflow UI over the studies"
    description = "Start the MLflow UI on the runs folder's tracking store."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        runs_dir_option(parser)
        parser.add_argument("--tracking-uri", help="MLflow store (default: sqlite:///<runs-dir>/mlflow.db)")
        parser.add_argument(
            "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
        )
        parser.add_argument("--port", type=int, default=5000, help="port (default 5000)")

    def take_action(self, args: argparse.Namespace) -> int:
        from autopeft.runs_dir import RunsDir

        runs = RunsDir.at(args.runs_dir)
        uri = args.tracking_uri or runs.tracking_uri
        if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
            raise AutopeftError(f"no MLflow store at {uri} (run a search first, or pass --runs-dir)")
        mlflow = beside_interpreter("mlflow")
        if mlflow is None:
            raise AutopeftError("the mlflow command is not installed (beside this Python, nor on PATH)")
        os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        command = [
            mlflow, "server", "--backend-store-uri", uri, "--default-artifact-root", runs.artifacts.as_uri(),
            "--host", args.host, "--port", str(args.port), "--workers", "1",
        ]  # fmt: skip
        # MLflow 3's UI opens on its GenAI views unless told otherwise (the experiment's kind tag is not enough).
        url = f"http://{args.host}:{args.port}/#/experiments?workflowType=machine_learning"
        print(f"MLflow UI on {url} (Ctrl-C to stop)", file=sys.stderr)
        os.execv(mlflow, command)
        return 0  # not reached


def beside_interpreter(command: str) -> str | None:
    """A command of this Python's environment: beside ``sys.executable`` first (a virtual environment that is not
    activated), then on ``PATH``.

    Args:
        command: its name (``mlflow``, ``ray``).
    """
    import shutil

    beside = Path(sys.executable).parent / command
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(command)
