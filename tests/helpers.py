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


def write_similarity_task(data_dir: str, folder, train_rows: int = 96, dev_rows: int = 48) -> str:
    """A three-class sentence-pair task the project has never seen, as JSONL files and a task file.

    Pairs come from STS-B; the label is the similarity score binned into ``different`` (< 2),
    ``related`` (2 to 3.5) and ``same`` (> 3.5). Returns the task file's path.
    """
    import csv
    import json
    from pathlib import Path

    folder = Path(folder)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for split, source, rows in (("train", "train", train_rows), ("dev", "dev", dev_rows)):
        with open(Path(data_dir) / "STS-B" / f"{source}.tsv", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            records = [next(reader) for _ in range(rows)]
        with open(folder / "data" / f"{split}.jsonl", "w", encoding="utf-8") as out:
            for record in records:
                score = float(record["score"])
                label = "different" if score < 2 else "related" if score <= 3.5 else "same"
                out.write(
                    json.dumps({"first": record["sentence1"], "second": record["sentence2"], "label": label}) + "\n"
                )
    task = folder / "similarity.yaml"
    task.write_text(
        "name: similarity3\n"
        "train: data/train.jsonl\n"
        "validation: data/dev.jsonl\n"
        "text_fields: [first, second]\n"
        "label_field: label\n"
        "labels: [different, related, same]\n"
        "metric: macro_f1\n"
        "extra_metrics: [accuracy]\n"
    )
    return str(task)
