"""Tasks: built-in GLUE tasks, data loading and metrics."""

from __future__ import annotations

from autopeft.errors import AutopeftError
from autopeft.tasks.glue import GLUE_TASKS
from autopeft.tasks.metrics import METRICS, compute_metrics
from autopeft.tasks.task import TaskData, TaskSpec

__all__ = ["GLUE_TASKS", "METRICS", "TaskData", "TaskSpec", "compute_metrics", "get_task"]

_ALIASES = {"sst-2": "sst2", "sts-b": "stsb"}


def get_task(name: str) -> TaskSpec:
    """Look up a built-in task by name (case-insensitive; ``SST-2`` and ``sst2`` both work).

    Args:
        name: task name.
    """
    key = name.lower()
    key = _ALIASES.get(key, key)
    if key not in GLUE_TASKS:
        raise AutopeftError(f"unknown task {name!r}; built-in tasks: {', '.join(sorted(GLUE_TASKS))}")
    return GLUE_TASKS[key]
