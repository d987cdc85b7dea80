"""Helpers shared by the end-to-end tests: run the real command, and read what a study wrote."""

from __future__ import annotations

import subprocess
import sys

import optuna
from mlflow.tracking import MlflowClient


def free_port() -> int:
    """A TCP port free on loopback right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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


def write_polarity_task(folder, learning_rate: float, status_quo_rate: float, labels: str = "word") -> dict[str, str]:
    """A task a tiny random model learns perfectly in a few epochs (the label is the adjective's polarity), a space
    whose trials all train at ``learning_rate``, and a status quo (LoRA r=8 on query and value of the three
    layers) training at ``status_quo_rate``: a learning rate of 1e-7 learns nothing, 1e-2 everything.

    Args:
        folder: where to write the files.
        learning_rate: every trial's learning rate.
        status_quo_rate: the status quo's.
        labels: ``word`` (the polarity) or ``random`` (labels no model can learn).

    Returns:
        The search options naming them: ``--task``, ``--space``, ``--status-quo``.
    """
    import json
    import random
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    words = {"yes": ["good", "great", "fine", "nice"], "no": ["bad", "awful", "poor", "dull"]}
    nouns = ["movie", "film", "show", "play", "book", "song"]
    for split, rows in (("train", 600), ("dev", 96)):
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as out:
            for _ in range(rows):
                label = rng.choice(["yes", "no"])
                text = f"{rng.choice(words[label])} {rng.choice(nouns)}"
                label = rng.choice(["yes", "no"]) if labels == "random" else label
                out.write(json.dumps({"text": text, "label": label}) + "\n")
    (folder / "task.yaml").write_text(
        "name: polarity\ntrain: train.jsonl\nvalidation: dev.jsonl\ntext_fields: [text]\nlabel_field: label\n"
        "labels: [no, yes]\nmetric: accuracy\n"
    )
    (folder / "space.yaml").write_text(
        "name: polarity\nmethods:\n  lora:\n    modules: {choices: [query, value]}\n    rank: {choices: [2, 4]}\n"
        f"training:\n  learning_rate: {learning_rate:.1e}\n"
    )
    targets = ", ".join(f"[{layer}, {module}, 8]" for layer in range(3) for module in ("query", "value"))
    (folder / "status-quo.yaml").write_text(
        f"methods:\n  lora: {{targets: [{targets}], alpha: 16}}\ntraining: {{learning_rate: {status_quo_rate:.1e}}}\n"
    )
    return {"--task": str(folder / "task.yaml"), "--space": str(folder / "space.yaml"),
            "--status-quo": str(folder / "status-quo.yaml")}  # fmt: skip


def polarity_search_args(model: str, runs_dir, study: str, files: dict[str, str], trials: int = 4) -> list[str]:
    """``search`` arguments for a quick study of :func:`write_polarity_task`'s files on the tiny model."""
    named = [x for pair in files.items() for x in pair]
    return ["search", *named, "--budget", "50%", "--model", model, "--max-length", "16", "--runs-dir", str(runs_dir),
            "--study", study, "--workers", "2", "--trials", str(trials)]  # fmt: skip


def make_spec(**options):
    """A study spec from option names as a spec file writes them (``runs_dir``, ``study``, ``max_train_samples``...),
    validated as ``autopeft search`` validates them."""
    from autopeft.study import StudySpec

    return StudySpec.from_dict(options)


def respec(spec, **options):
    """``spec`` with some options changed, validated again."""
    from autopeft.study import StudySpec

    return StudySpec.from_dict(spec.flat() | options)
