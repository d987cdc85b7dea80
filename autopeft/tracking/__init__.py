"""MLflow tracking: the adaptor (:mod:`autopeft.tracking.mlflow`) and syncing a study into it
(:mod:`autopeft.tracking.sync`)."""

from __future__ import annotations

from autopeft.tracking.mlflow import Tracker
from autopeft.tracking.sync import StudyTracker

__all__ = ["StudyTracker", "Tracker"]
