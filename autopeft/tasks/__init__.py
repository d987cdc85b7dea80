"""Tasks: task files (the built-in GLUE tasks are shipped ones), data loading and metrics."""

from __future__ import annotations

from pathlib import Path

from autopeft.errors import ConfigError
from autopeft.tasks.metrics import METRICS, compute_metrics
from autopeft.tasks.selection import holdout_indices, holdout_size
from autopeft.tasks.task import TaskData, TaskSpec, load_task_file

__all__ = [
    "METRICS",
    "TASKS_DIR",
    "TaskData",
    "TaskSpec",
    "builtin_tasks",
    "compute_metrics",
    "get_task",
    "holdout_indices",
    "holdout_size",
    "task_reference",
]

TASKS_DIR = Path(__file__).resolve().parents[2] / "tasks"
"""The shipped task files (``tasks/rte.yaml`` ...)."""

_ALIASES = {"sst-2": "sst2", "sts-b": "stsb"}


def builtin_tasks() -> list[str]:
    """Names of the shipped task files."""
    return sorted(p.stem for p in TASKS_DIR.glob("*.yaml"))


def _is_file_reference(text: str) -> bool:
    return Path(text).suffix.lower() in (".yaml", ".yml") or Path(text).expanduser().is_file()


def task_reference(text: str) -> str:
    """How a task is passed on to workers and stored: a built-in name, or the task file's absolute path.

    Args:
        text: a built-in name (case-insensitive; ``SST-2`` and ``sst2`` both work) or a task file.
    """
    if _is_file_reference(text):
        return str(Path(text).expanduser().resolve())
    return get_task(text).name


def get_task(text: str) -> TaskSpec:
    """A task by built-in name or task file path.

    Args:
        text: a built-in name (``rte``; case-insensitive, ``SST-2`` works) or a task file's path.
    """
    if _is_file_reference(text):
        return load_task_file(text)
    key = _ALIASES.get(text.lower(), text.lower())
    shipped = TASKS_DIR / f"{key}.yaml"
    if not shipped.is_file():
        raise ConfigError(
            f"unknown task {text!r}; built-in tasks: {', '.join(builtin_tasks())}, or the path of a task file (.yaml)"
        )
    return load_task_file(shipped)
