"""The MLflow adaptor: one experiment and one parent run per study, child runs written whole, the parent's progress.

Runs are found again by tags (``autopeft.study``, ``autopeft.role``, ``autopeft.trial``), so a continued study
reuses its parent run. Tracking never stops a search: the first MLflow error is reported once as a warning and
tracking is switched off; the Optuna storage keeps everything, and :mod:`autopeft.tracking.sync` writes what is
missing later. What a study's records become in MLflow is :mod:`autopeft.tracking.sync`'s.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from autopeft import failpoints, keys
from autopeft.locks import sqlite_path, store_lock
from autopeft.runs_dir import user_cache_dir
from autopeft.study.spec import mask_url

logger = logging.getLogger(__name__)
# A tracking server that went away must cost seconds, not MLflow's minutes of retries with backoff: the
# search warns once and goes on, and `autopeft sync` writes the missing runs later.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")

EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
"""The tag that makes MLflow's UI open an experiment on its runs table and charts (model training)."""


def flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    """A nested mapping as dotted keys (``spec.what.training.epochs``)."""
    if isinstance(value, dict):
        for key, item in value.items():
            flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = value
    return out


DIGEST_LENGTH = 32
"""Hex characters of a file's SHA-256 an MLflow dataset's digest keeps (its column holds 36); the profile has it all."""


def dataset_input(entry: dict[str, Any]):
    """An MLflow dataset input of a data file a run read.

    Args:
        entry: ``name`` (``rte-train``), ``context`` (``training``, ``evaluation``), ``path``, ``sha256``, ``rows``.
    """
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    source = json.dumps({"uri": Path(entry["path"]).resolve().as_uri()})
    profile = json.dumps({"num_rows": entry["rows"], "sha256": entry["sha256"]})
    dataset = Dataset(entry["name"], entry["sha256"][:DIGEST_LENGTH], "local", source, profile=profile)
    return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, entry["context"])])


def _check_server(uri: str) -> None:
    import urllib.request

    with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5):
        pass


def empty_store_template() -> Path:
    """An empty SQLite store of this MLflow version, its schema migrated once per user and MLflow version.

    MLflow migrates a new store step by step (seconds of CPU, every new runs folder); a copy of a
    migrated one is what those steps would leave, less the time. Made beside its final name and
    renamed into place, so processes making it at once each leave a whole file.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    template = user_cache_dir() / "mlflow" / f"empty-{mlflow.__version__}.db"
    if not template.is_file():
        template.parent.mkdir(parents=True, exist_ok=True)
        building = template.with_name(f".{template.name}.{os.getpid()}")
        building.unlink(missing_ok=True)
        MlflowClient(tracking_uri=f"sqlite:///{building}").search_experiments(max_results=1)
        os.replace(building, template)
    return template


def create_local_store(path: Path, artifact_root: Path) -> None:
    """Create a new SQLite tracking store at ``path`` from :func:`empty_store_template`, under the store's lock.

    The copy's ``Default`` experiment (which autopeft does not write to) keeps its artifacts under
    ``artifact_root``, not under the folder the template was made from.

    Args:
        path: the store's file; it does not exist yet.
        artifact_root: the runs folder's MLflow artifacts folder.
    """
    import shutil
    import sqlite3

    copying = path.with_name(f".{path.name}.{os.getpid()}")
    shutil.copyfile(empty_store_template(), copying)
    now = int(time.time() * 1000)
    with sqlite3.connect(copying) as db:
        db.execute(
            "UPDATE experiments SET artifact_location = ?, creation_time = ?, last_update_time = ? "
            "WHERE experiment_id = 0",
            ((artifact_root / "0").resolve().as_uri(), now, now),
        )
    db.close()
    os.replace(copying, path)


class Tracker:
    """A study's experiment in MLflow: its parent run, and child runs written whole.

    Args:
        uri: MLflow tracking URI (``sqlite:///...`` or ``http://host:port``).
        study: the study's name (also the experiment's name).
        artifact_dir: where artifacts go for a local SQLite store (ignored for servers).
        spec: the study's settings, logged as parameters of the parent run.
        attach: only add runs and files to the parent (``retrain``, ``report``): its status is left
            as it is (a search running beside them keeps it RUNNING), and :meth:`finish` does nothing.
    """

    def __init__(
        self,
        uri: str,
        study: str,
        artifact_dir: str | Path | None = None,
        spec: dict | None = None,
        attach: bool = False,
    ) -> None:
        self.uri = uri
        self.study = study
        self.attach = attach
        self.enabled = True
        self.parent_id: str | None = None
        self._guard(self._open, artifact_dir, spec or {})

    # -- failure handling ------------------------------------------------------------------------
    def _guard(self, fn, *args):
        if not self.enabled:
            return None
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - tracking must never stop a search
            self.enabled = False
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            logger.warning("MLflow tracking at %s is off for this run: %s", mask_url(self.uri), first)
            return None

    # -- setup ---------------------------------------------------------------------------------
    def _open(self, artifact_dir: str | Path | None, spec: dict) -> None:
        if self.uri.startswith(("http://", "https://")):
            _check_server(self.uri)  # fail in seconds, not after MLflow's minutes of retries
        # A local store's schema is created (migrated) by its first client, and its experiment and
        # parent run by the first of the study's workers: one process at a time.
        path = sqlite_path(self.uri)
        with store_lock(path):
            failpoints.pause("mlflow.open")
            if path is not None and artifact_dir is not None and not path.exists():
                try:
                    create_local_store(path, Path(artifact_dir))
                except OSError as exc:  # no writable user cache: MLflow creates the store, in seconds more
                    logger.warning("MLflow store template unavailable (%s): creating %s step by step", exc, path)
            self._open_runs(artifact_dir, spec)

    def _open_runs(self, artifact_dir: str | Path | None, spec: dict) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        experiment = self.client.get_experiment_by_name(self.study)
        if experiment is None:
            location = None
            if self.uri.startswith("sqlite:") and artifact_dir is not None:
                location = Path(artifact_dir).resolve().as_uri()
            self.experiment_id = self.client.create_experiment(self.study, artifact_location=location)
        else:
            self.experiment_id = experiment.experiment_id
        # MLflow 3 opens an experiment without a kind on its GenAI overview ("No data"): this is model training.
        self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        parents = self._parents()
        if not parents:
            run = self.client.create_run(
                self.experiment_id, run_name=self.study, tags={keys.TAG_STUDY: self.study, keys.TAG_ROLE: "parent"}
            )
            for key, value in flatten(keys.PARAM_SPEC.rstrip("."), spec, {}).items():
                self.client.log_param(run.info.run_id, key, str(value)[:500])
            parents = self._parents()
            # Several workers may have started one each at the same moment: all keep the oldest.
            for extra in parents[1:]:
                if extra.info.run_id == run.info.run_id:
                    self.client.delete_run(extra.info.run_id)
        self.parent_id = parents[0].info.run_id
        if not self.attach:
            self.client.update_run(self.parent_id, status="RUNNING")

    def _parents(self) -> list:
        runs = self._runs("tags.`autopeft.role` = 'parent'")
        return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))

    def _runs(self, filter_string: str) -> list:
        return list(
            self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`autopeft.study` = '{self.study}' and {filter_string}",
                max_results=5000,
            )
        )

    def guarded(self, fn, *args):
        """Call ``fn`` unless tracking is off; its first MLflow error turns tracking off, said once."""
        return self._guard(fn, *args)

    def runs(self, role: str) -> list:
        """This study's runs of a role (``trial``, ``status_quo``, ...)."""
        return self._runs(f"tags.`{keys.TAG_ROLE}` = '{role}'")

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        """Tag a run."""
        self.client.set_tag(run_id, key, value)

    def delete(self, run_id: str) -> None:
        """Delete a run (one a killed process left half written)."""
        self.client.delete_run(run_id)

    def attach_text(self, text: str, name: str) -> None:
        """Attach a text file to the parent run."""
        self.client.log_text(self.parent_id, text, name)

    def write_run(
        self,
        name: str,
        tags: dict[str, str],
        params: dict[str, Any],
        metrics: dict[str, Any],
        config: dict | None,
        status: str,
        files: list[Path] = (),
        inputs: list[dict[str, Any]] = (),
    ) -> str:
        """Write one child run whole (tags, parameters, metrics, the configuration, files, datasets), then end it.

        Args:
            name: the run's name.
            tags: its tags (the parent's id included).
            params: its parameters.
            metrics: its metrics (``None`` values are left out).
            config: the configuration, attached as ``config.json``.
            status: how it ended (``FINISHED``, ``FAILED``, ``KILLED``).
            files: further files attached to it.
            inputs: the data files it read (:func:`dataset_input`'s records), shown in the Dataset column.
        """
        from mlflow.entities import Metric, Param

        run_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
        failpoints.pause("mlflow.run")
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None],
            params=[Param(k, str(v)[:6000]) for k, v in params.items()],
        )
        if inputs:
            self.client.log_inputs(run_id, datasets=[dataset_input(entry) for entry in inputs])
        if config is not None:
            self.client.log_dict(run_id, config, "config.json")
        for path in files:
            self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, status)
        return run_id

    def log_curve(self, run_id: str, key: str, values: list[float]) -> None:
        """Log a per-step series (a training loss curve) as one metric's history, in batches."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        points = [Metric(key, float(v), now, step) for step, v in enumerate(values, 1) if math.isfinite(v)]
        for start in range(0, len(points), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(run_id, metrics=points[start : start + 1000])

    def log_progress(self, metrics: dict[str, float], step: int, files: list[Path] = ()) -> None:
        """Log the search's progress on the parent run: metrics at ``step`` (finished trials) and files.

        Args:
            metrics: ``pareto_size``, ``hypervolume``, ``best_score``, ``best_metric`` ... (None values are skipped).
            step: the number of finished trials.
            files: files to attach to the parent (the Pareto plot), replacing earlier versions.
        """

        def write() -> None:
            for key, value in metrics.items():
                if value is not None and math.isfinite(value):
                    self.client.log_metric(self.parent_id, key, float(value), step=step)
            for path in files:
                self.client.log_artifact(self.parent_id, str(path))

        self._guard(write)

    def log_artifact(self, path: str | Path) -> None:
        """Attach a file (a report's plot) to the parent run.

        Args:
            path: the file.
        """
        self._guard(lambda: self.client.log_artifact(self.parent_id, str(path)))

    def finish(self, status: str = "FINISHED") -> None:
        """Mark the parent run finished (a continued study re-opens it); nothing for an attached tracker."""
        if not self.attach:
            self._guard(lambda: self.client.set_terminated(self.parent_id, status))
