"""Helpers shared by the end-to-end tests: run the real command, and read what a study wrote."""

from __future__ import annotations

import subprocess
import sys

import optuna
from mlflow.tracking import MlflowClient


def autopeft(*args: str, timeout: float = 900, **kwargs) -> subprocess.CompletedProcess:
    """Run the ``autopeft`` command in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "autopeft.cli", *args], capture_output=True, text=True, timeout=timeout, **kwargs
    )


def tiny_search_args(model: str, data_dir: str, runs_dir, study: str, trials: int, *extra: str) -> list[str]:
    """``search`` arguments for a quick study on a tiny model and a small slice of RTE (``--trials`` last)."""
    return [
        "search", "--task", "rte", "--budget", "2%", "--model", model, "--epochs", "0.5", "--max-train-samples", "64",
        "--max-eval-samples", "64", "--data-dir", data_dir, "--runs-dir", str(runs_dir), "--study", study,
        *extra, "--trials", str(trials),
    ]  # fmt: skip


def trials_of(study: str, storage: str, *states: optuna.trial.TrialState) -> list[optuna.trial.FrozenTrial]:
    """The study's trials (in the given states, or all)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    loaded = optuna.load_study(study_name=study, storage=storage)
    return loaded.get_trials(deepcopy=False, states=states or None)


def mlflow_runs(tracking_uri: str, study: str) -> tuple[list, list]:
    """(trial runs, parent runs) that MLflow holds for a study."""
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(study)
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    role = lambda run: run.data.tags.get("autopeft.role")  # noqa: E731
    return [r for r in runs if role(r) == "trial"], [r for r in runs if role(r) == "parent"]
