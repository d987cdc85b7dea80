"""Train one fixed configuration with several seeds and summarise: what ``retrain``, ``evaluate`` and
``baselines`` share.

Runs go one after another in this process with every CPU thread (on a GPU, the GPU): a handful of
seeded runs gains nothing from Ray's scheduling, and one process keeps the backbone loaded once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autopeft.errors import AutopeftError, DataError
from autopeft.methods.build import writes_masks
from autopeft.methods.config import TrialConfig
from autopeft.models import BackboneInfo
from autopeft.results import closest_to_mean, summarize
from autopeft.tasks import TaskSpec, get_task
from autopeft.training import ProxyRequest, ProxySettings, run_proxy_trial


@dataclass(frozen=True)
class RunPlan:
    """What to train, where the data is, and how.

    Attributes:
        model: HF id or folder of the backbone.
        task: a built-in task name or a task file's absolute path.
        data_dir: folder of ``data_dir`` tasks (GLUE), ``None`` for other tasks or the hub.
        settings: training settings (a proxy, or full fidelity: every example, several epochs).
        cache_dir: tokenisation cache folder.
        masks_dir: where pruning masks of each run are written (``None``: not kept).
        predictions_dir: where each run's per-example predictions are written (``None``: not kept).
        runs_dir: the runs folder the predictions' paths are recorded relative to (``None``: absolute paths).
        models_dir: where each run's trained model is kept, one folder per run (``None``: not kept).
        provenance: recorded in each kept model's ``trained`` block (the study).
    """

    model: str
    task: str
    data_dir: str | None
    settings: ProxySettings
    cache_dir: str | None = None
    masks_dir: str | None = None
    predictions_dir: str | None = None
    runs_dir: str | None = None
    models_dir: str | None = None
    provenance: dict | None = None

    @classmethod
    def in_runs_dir(
        cls,
        model: str,
        task: str,
        data_dir: str | None,
        settings: ProxySettings,
        runs_dir: str | Path,
        name: str,
        keep_models: bool = False,
    ) -> RunPlan:
        """A plan using a runs folder's tokenisation cache, keeping masks, each run's predictions and trained model
        there.

        Args:
            model: HF id or folder of the backbone.
            task: a built-in task name or a task file's absolute path.
            data_dir: folder of data_dir tasks.
            settings: training settings.
            runs_dir: the runs folder.
            name: the study the runs belong to.
            keep_models: keep each run's trained model (``retrain``; baselines keep none).
        """
        from autopeft.runs_dir import RunsDir

        runs = RunsDir.at(runs_dir)
        cache, masks, predictions = runs.tokenized, runs.masks(name), runs.predictions(name)
        kept = str(runs.models(name)) if keep_models else None
        return cls(
            model, task, data_dir, settings, str(cache), str(masks), str(predictions), str(runs.root), kept,
            {"study": name},
        )  # fmt: skip


def settings_key(settings: ProxySettings) -> str:
    """A short label of training settings that tells runs of different fidelity apart (``e3-all-b16``)."""
    samples = settings.max_train_samples or "all"
    return f"e{settings.epochs:g}-{samples}-b{settings.batch_size}-l{settings.max_length}"


def training_threads() -> int:
    """Torch threads of a training outside a search (``evaluate``, ``retrain``, ``baselines``): ``OMP_NUM_THREADS``
    when it is set, else every core this process may run on.

    Set ``OMP_NUM_THREADS`` when other work shares the cores: two trainings that each take every core run far
    slower than one after the other (measured here: a CoLA retrain run took 3,184 s beside another two-thread
    training on 2 cores, and for half that time the tests; 175 s alone).
    """
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def train_seeds(
    config: TrialConfig,
    plan: RunPlan,
    seeds: Iterable[int],
    on_run: Callable[[int, dict[str, Any]], None] | None = None,
    label: str = "run",
    command: str = "this command",
) -> list[dict[str, Any]]:
    """Train and evaluate ``config`` once per seed (a trial's result dict per seed, ``seed`` added).

    A run that fails (non-finite loss, out of memory) gives ``{"seed", "fail_reason"}`` and the
    other seeds still run; a problem with the input (data, configuration) is raised.

    Args:
        config: a validated configuration.
        plan: model, task, data and settings.
        seeds: the seeds (each decides the training subset, order and initialisation).
        on_run: called with ``(seed, result)`` after each run (to store or log it at once).
        label: name of the masks file of each run (``<label>-seed<k>.npz``).
        command: what is training, for the message when the task has no validation split.

    Raises:
        DataError: the task has no validation split to score on (or another problem with the input).
    """
    require_validation(get_task(plan.task), plan.data_dir, command)
    threads = training_threads()
    results = []
    for seed in seeds:
        masks = None
        if plan.masks_dir and writes_masks(config):
            masks = str(Path(plan.masks_dir) / f"{label}-seed{seed}.npz")
        request = ProxyRequest(
            model=plan.model,
            task=plan.task,
            data_dir=plan.data_dir,
            config=config.to_dict(),
            settings=plan.settings,
            seed=seed,
            threads=threads,
            cache_dir=plan.cache_dir,
            masks_path=masks,
            predictions=plan.predictions_dir is not None,
            model_dir=str(Path(plan.models_dir) / f"{label}-seed{seed}") if plan.models_dir else None,
            provenance={**(plan.provenance or {}), "run": f"{label}-seed{seed}"},
        )
        try:
            result = {**run_proxy_trial(request), "seed": seed}
        except AutopeftError:
            raise  # the input is wrong (data, configuration): every seed would fail the same way
        except Exception as exc:  # noqa: BLE001 - a failed run is recorded and the others go on
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            result = {"seed": seed, "fail_reason": f"{type(exc).__name__}: {first}"}
        if "predictions" in result:
            path = Path(plan.predictions_dir) / f"{label}-seed{seed}.csv"
            result["predictions"] = write_predictions(path, result["predictions"], get_task(plan.task), plan.runs_dir)
        if request.model_dir and "metric" in result:
            result["model"] = relative_to(Path(request.model_dir), plan.runs_dir)
        results.append(result)
        if on_run is not None:
            on_run(seed, result)
    return results


def write_predictions(path: Path, predictions: dict[str, Any], task: TaskSpec, root: str | None = None) -> dict:
    """Write one run's per-example predictions on the validation split as a CSV file (atomically), for error
    analysis and paired comparisons: ``example`` (the row's index in the validation file), ``label`` (gold),
    ``predicted``, and for classification each class's probability (``p_<label name>``).

    Args:
        path: the file.
        predictions: the trainer's ``predictions`` (``labels``, ``predicted``, ``probabilities``).
        task: the task (its label names).
        root: the runs folder: ``file`` is recorded relative to it (the folder may move: a bench's stores do).

    Returns:
        What the study keeps of it: ``{"file", "sha256", "rows"}``.
    """
    import hashlib
    import os

    import pandas as pd

    frame = pd.DataFrame({"example": range(len(predictions["labels"])), "label": predictions["labels"]})
    frame["predicted"] = predictions["predicted"]
    names = task.class_names
    for k, column in enumerate(zip(*predictions.get("probabilities") or [], strict=True)):
        frame[f"p_{names[k] if k < len(names) else k}"] = column
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    frame.to_csv(tmp, index=False)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    tmp.replace(path)
    return {"file": relative_to(path, root), "sha256": digest, "rows": len(frame)}


def relative_to(path: Path, root: str | None) -> str:
    """A kept file's path as a study records it: relative to the runs folder where it lies inside (a bench's stores
    move), else absolute."""
    return str(path.relative_to(root) if root and path.is_relative_to(root) else path)


def kept_path(stored: str, runs_dir: str | Path | None) -> Path:
    """Where a path a study recorded (:func:`relative_to`) lies here."""
    return Path(runs_dir or "") / stored


def require_validation(task: TaskSpec, data_dir: str | None, command: str) -> None:
    """A one-line error when a task's validation split, which every run after the search scores on, is missing
    or unreadable (read once here, before any training starts).

    Args:
        task: the task.
        data_dir: the folder of data_dir tasks.
        command: what needs it (``retrain``).
    """
    path = task.split_path("validation", data_dir)
    if path is None or not path.parent.is_dir():
        return  # the hub's split, or a data folder that is missing (reading the train split says so)
    if not path.is_file():
        raise DataError(
            f"{command} needs a validation split to score on, and task {task.name!r} has none: {path} does not "
            "exist (a search does not need it: it scores on its selection split)"
        )
    task.load_split("validation", data_dir)  # its labels are checked before any training starts


def predictions_file(record: dict[str, Any], plan: RunPlan) -> list[Path]:
    """The per-example predictions file of a run's record, where it lies here (none when the run kept none).

    Args:
        record: the run's record (:func:`run_record`).
        plan: the plan it was trained with.
    """
    stored = (record.get("predictions") or {}).get("file")
    return [kept_path(stored, plan.runs_dir)] if stored else []


def run_record(result: dict[str, Any], info: BackboneInfo, settings: ProxySettings) -> dict[str, Any]:
    """The JSON-able record of one seeded run kept in the study storage and logged to MLflow.

    Args:
        result: a trial's result (with ``seed``).
        info: the backbone.
        settings: the settings it was trained with.
    """
    return {
        "seed": result["seed"],
        "metric": result["metric"],
        "metrics": result["metrics"],
        "trainable_params": result["trainable_params"],
        "trainable_fraction": info.fraction(result["trainable_params"]),
        "sparsity": result["sparsity"],
        "steps": result["steps"],
        "seconds": result["seconds"],
        "train_seconds": result["train_seconds"],
        "threads": result["threads"],
        "train_tokens": result["train_tokens"],
        "settings": settings_key(settings),
        "epochs": settings.epochs,
        "max_train_samples": settings.max_train_samples,
        **({"predictions": result["predictions"]} if "predictions" in result else {}),
        **({"model": result["model"]} if "model" in result else {}),
    }


def evaluate_config(
    config: TrialConfig,
    info: BackboneInfo,
    plan: RunPlan,
    seeds: list[int],
    out: str | Path | None = None,
    source: str = "",
    on_run: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train one configuration with each seed (``autopeft evaluate``); summarise, and export it to ``out``.

    Args:
        config: a validated configuration.
        info: the backbone.
        plan: model, task, data and settings (masks are kept in a scratch folder, copied to the export).
        seeds: the seeds.
        out: a folder to write (see :mod:`autopeft.model_folder`), or ``None``: the configuration, and the trained
            weights of the seed closest to the seeds' mean.
        source: where the configuration came from (recorded in the export).
        on_run: called with ``(seed, result)`` after each run.

    Raises:
        AutopeftError: every run failed (the first reason is said).
    """
    import dataclasses
    import tempfile

    from autopeft.model_folder import copy_trained, write_export
    from autopeft.tasks import get_task

    task = get_task(plan.task)
    with tempfile.TemporaryDirectory() as scratch:
        models = str(Path(scratch) / "models") if out else None
        kept = dataclasses.replace(plan, masks_dir=scratch, models_dir=models, provenance={"source": source})
        runs = train_seeds(config, kept, seeds, on_run, command="evaluate")
        ok = [r for r in runs if "metric" in r]
        if not ok:
            raise AutopeftError(f"every run failed; first: {runs[0]['fail_reason']}")
        stats, first = summarize(ok), ok[0]
        keys = ("seed", "metric", "metrics", "sparsity", "steps", "seconds", "fail_reason")
        summary = {
            "task": task.name,
            "metric_name": task.metric,
            "metric": stats.mean,
            "metric_std": stats.std,
            "seeds": stats.seeds,
            "failed": len(runs) - len(ok),
            "metrics": stats.metrics,
            "trainable_params": first["trainable_params"],  # counted on the built model, equal to the prediction
            "trainable_fraction": info.fraction(first["trainable_params"]),
            "target_sparsity": first["target_sparsity"],
            "sparsity": sum(r["sparsity"] for r in ok) / len(ok),
            "steps": first["steps"],
            "seconds": sum(r.get("seconds", 0.0) for r in ok),
            "method_report": first["method_report"],
            "runs": [{k: r[k] for k in keys if k in r} for r in runs],
        }
        if out:
            record = {**summary, "task": plan.task, "task_name": task.name, "source": source}
            write_export(out, config, info, record, first["steps"], first.get("masks_path"))
            copy_trained(kept_path(closest_to_mean(ok)["model"], plan.runs_dir), out)
    return summary
