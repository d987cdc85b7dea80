"""The runs folder: everything a study writes, and where, in one place.

::

    <runs>/optuna.db                      the study store (SQLite; --storage names another)
    <runs>/mlflow.db, mlartifacts/        the tracking store and its artifacts (--tracking-uri names another)
    <runs>/cache/tokenized/               tokenised splits, by model, task definition, split and length
    <runs>/cache/memory/                  memory-model calibrations, by backbone, batch shape and device
    <runs>/masks/<study>/                 pruning masks of trials and seeded runs
    <runs>/predictions/<study>/           per-example validation predictions of retrains and baselines
    <runs>/ray/<study>/                   Ray Tune's trial folders
    <runs>/logs/<study>/                  Ray's own log lines and the search's timings, one file each per run

and, shared by every runs folder of a user, :func:`user_cache_dir` (``$AUTOPEFT_CACHE_DIR``, else
``$XDG_CACHE_HOME/autopeft``, else ``~/.cache/autopeft``)::

    <cache>/mlflow/empty-<version>.db     an empty MLflow store, migrated once per MLflow version
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

ENV = "AUTOPEFT_RUNS_DIR"
DEFAULT = "autopeft-runs"


CACHE_ENV = "AUTOPEFT_CACHE_DIR"


def user_cache_dir() -> Path:
    """What autopeft keeps between runs folders: ``$AUTOPEFT_CACHE_DIR``, else ``$XDG_CACHE_HOME/autopeft``,
    else ``~/.cache/autopeft``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "autopeft"


def default_runs_dir() -> str:
    """``$AUTOPEFT_RUNS_DIR`` or ``./autopeft-runs``."""
    return os.environ.get(ENV, DEFAULT)


@dataclass(frozen=True)
class RunsDir:
    """A runs folder (resolved to an absolute path).

    Attributes:
        root: the folder.
    """

    root: Path

    @classmethod
    def at(cls, folder: str | Path | None = None) -> RunsDir:
        """The runs folder at ``folder`` (default: :func:`default_runs_dir`)."""
        return cls(Path(folder or default_runs_dir()).expanduser().resolve())

    @property
    def storage(self) -> str:
        """The default study store, a SQLite file."""
        return f"sqlite:///{self.root / 'optuna.db'}"

    @property
    def tracking_uri(self) -> str:
        """The default MLflow store, a SQLite file."""
        return f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def artifacts(self) -> Path:
        """Where a local MLflow store keeps its artifacts."""
        return self.root / "mlartifacts"

    @property
    def tokenized(self) -> Path:
        """The tokenisation cache."""
        return self.root / "cache" / "tokenized"

    @property
    def memory_cache(self) -> Path:
        """The memory models' calibrations, by backbone, batch shape and device."""
        return self.root / "cache" / "memory"

    @property
    def ray(self) -> Path:
        """Ray Tune's storage folder."""
        return self.root / "ray"

    def masks(self, study: str) -> Path:
        """A study's pruning masks."""
        return self.root / "masks" / study

    def predictions(self, study: str) -> Path:
        """A study's per-example predictions (retrains, baselines)."""
        return self.root / "predictions" / study

    def models(self, study: str) -> Path:
        """A study's trained models, one folder per run (``trial-3-seed0``; :mod:`autopeft.model_folder`'s format)."""
        return self.root / "models" / study

    def logs(self, study: str) -> Path:
        """A study's log files."""
        return self.root / "logs" / study

    def run_logs(self, study: str) -> tuple[Path, Path]:
        """This run's files among a study's logs: Ray's own log lines, and the search's timings (one per run)."""
        stamp = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{os.getpid()}"
        return self.logs(study) / f"ray-{stamp}.log", self.logs(study) / f"timings-{stamp}.jsonl"
