"""Executors: run proxy trials in parallel (Ray Tune, locally or on an existing cluster)."""

from __future__ import annotations

from autopeft.execution.ray_tune import StudySearcher, init_ray, proxy_trainable, run_with_ray

__all__ = ["StudySearcher", "init_ray", "proxy_trainable", "run_with_ray"]
