"""Executors: run trials in parallel (Ray Tune, locally or on an existing cluster), successive halving at rungs.

The Ray Tune part is imported on first use, so the rung decisions can be used without importing Ray
(the policy itself, :class:`autopeft.study.SuccessiveHalving`, is part of a study's spec).
"""

from __future__ import annotations

from typing import Any

from autopeft.execution.rungs import RungBoard, should_stop

_RAY_TUNE = ("DONE_STATES", "StudySearcher", "init_ray", "proxy_trainable", "run_with_ray")

__all__ = ["RungBoard", "should_stop", *_RAY_TUNE]


def __getattr__(name: str) -> Any:
    if name in _RAY_TUNE:
        from autopeft.execution import ray_tune

        return getattr(ray_tune, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
