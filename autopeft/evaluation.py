"""Train one fixed configuration with several seeds and summarise: what ``retrain``, ``evaluate`` and
``baselines`` share.

Runs go one after another in this process with every CPU thread (on a GPU, the GPU): a handful of
seeded runs gains nothing from Ray's scheduling, and one process keeps the backbone loaded once.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autopeft.errors import AutopeftError, DataError
from autopeft.methods.config import TrialConfig
from autopeft.models import BackboneInfo
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
    """

    model: str
    task: str
    data_dir: str | None
    settings: ProxySettings
    cache_dir: str | None = None
    masks_dir: str | None = None

    @classmethod
    def in_runs_dir(
        cls, model: str, task: str, data_dir: str | None, settings: ProxySettings, runs_dir: str | Path, name: str
    ) -> RunPlan:
        """A plan using a runs folder's tokenisation cache, keeping masks under ``masks/<name>/``.

        Args:
            model: HF id or folder of the backbone.
            task: a built-in task name or a task file's absolute path.
            data_dir: folder of data_dir tasks.
            settings: training settings.
            runs_dir: the runs folder.
            name: the study the runs belong to.
        """
        runs_dir = Path(runs_dir).resolve()
        return cls(
            model, task, data_dir, settings, str(runs_dir / "cache" / "tokenized"), str(runs_dir / "masks" / name)
        )


@dataclass
class SeedSummary:
    """The metric of one configuration over seeds.

    Attributes:
        mean: mean of the main metric.
        std: its sample standard deviation (0 for one seed).
        seeds: how many seeds.
        metrics: mean of every task metric.
    """

    mean: float
    std: float
    seeds: int
    metrics: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.mean:.4f} ± {self.std:.4f} (n={self.seeds})"


def settings_key(settings: ProxySettings) -> str:
    """A short label of training settings that tells runs of different fidelity apart (``e3-all-b16``)."""
    samples = settings.max_train_samples or "all"
    return f"e{settings.epochs:g}-{samples}-b{settings.batch_size}-l{settings.max_length}"


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
    threads = os.cpu_count() or 1
    results = []
    for seed in seeds:
        masks = None
        if plan.masks_dir and "pruning" in config.methods:
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
        )
        try:
            result = {**run_proxy_trial(request), "seed": seed}
        except AutopeftError:
            raise  # the input is wrong (data, configuration): every seed would fail the same way
        except Exception as exc:  # noqa: BLE001 - a failed run is recorded and the others go on
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            result = {"seed": seed, "fail_reason": f"{type(exc).__name__}: {first}"}
        results.append(result)
        if on_run is not None:
            on_run(seed, result)
    return results


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


def summarize(runs: list[dict[str, Any]]) -> SeedSummary:
    """Mean and sample standard deviation of the main metric (and the mean of every metric) over runs.

    Args:
        runs: results with ``metric`` and ``metrics``.
    """
    runs = [r for r in runs if "metric" in r]  # failed runs have none
    if not runs:
        raise ValueError("no successful run to summarise")
    values = [float(r["metric"]) for r in runs]
    names = sorted({k for r in runs for k in r.get("metrics", {})})
    means = {k: statistics.fmean(float(r["metrics"][k]) for r in runs if k in r.get("metrics", {})) for k in names}
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return SeedSummary(statistics.fmean(values), std, len(values), means)


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
    }
