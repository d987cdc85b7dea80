"""MLflow tracking: one experiment and one parent run per study, one child run per trial.

Runs are found again by tags (``autopeft.study``, ``autopeft.role``, ``autopeft.trial``), so a
continued study reuses its parent run and never logs a trial twice. Tracking never stops a search:
the first MLflow error is reported once as a warning and tracking is switched off; Optuna storage
keeps everything.
"""

from __future__ import annotations

import io
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from autopeft import failpoints
from autopeft.locks import sqlite_path, store_lock
from autopeft.methods.build import describe
from autopeft.study import mask_url

logger = logging.getLogger(__name__)
# A tracking server that went away must cost seconds, not MLflow's minutes of retries with backoff: the
# search warns once and goes on, and `autopeft sync` writes the missing runs later.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")

PARETO_TAG = "autopeft.pareto"
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
"""The tag that makes MLflow's UI open an experiment on its runs table and charts (model training)."""


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = value
    return out


def _check_server(uri: str) -> None:
    import urllib.request

    with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5):
        pass


class Tracker:
    """Logs a study's trials to MLflow.

    Args:
        uri: MLflow tracking URI (``sqlite:///...`` or ``http://host:port``).
        study: the study's name (also the experiment's name).
        artifact_dir: where artifacts go for a local SQLite store (ignored for servers).
        spec: the study's settings, logged as parameters of the parent run.
        attach: only add runs and files to the parent (``retrain``, ``report``): its status is left
            as it is (a search running beside them keeps it RUNNING), and :meth:`finish` does nothing.
        stale_s: seconds after which a trial run still RUNNING was left by a killed process (the study's
            heartbeat grace).
    """

    def __init__(
        self,
        uri: str,
        study: str,
        artifact_dir: str | Path | None = None,
        spec: dict | None = None,
        attach: bool = False,
        stale_s: float = 30.0,
    ) -> None:
        self.uri = uri
        self.study = study
        self.attach = attach
        self.stale_s = stale_s
        self.enabled = True
        self.parent_id: str | None = None
        self._logged: dict[int, str] = {}
        self._tagged: dict[str, str] = {}
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
        with store_lock(sqlite_path(self.uri)):
            failpoints.pause("mlflow.open")
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
                self.experiment_id, run_name=self.study, tags={"autopeft.study": self.study, "autopeft.role": "parent"}
            )
            for key, value in _flatten("", spec, {}).items():
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

    def _child_ids(self) -> dict[int, str]:
        """Trial number -> run id of every trial run of the study, read from the server (any worker's).

        A run still RUNNING after the heartbeat grace was left by a process killed while writing it: it is
        deleted, so that the trial is logged again, whole.
        """
        runs = self._runs("tags.`autopeft.role` = 'trial'")
        now = time.time() * 1000
        for orphan in [r for r in runs if r.info.status == "RUNNING" and now - r.info.start_time > 1000 * self.stale_s]:
            self.client.delete_run(orphan.info.run_id)
            runs.remove(orphan)
        self._logged = {int(r.data.tags["autopeft.trial"]): r.info.run_id for r in runs}
        self._tagged = {r.info.run_id: r.data.tags.get(PARETO_TAG) for r in runs}
        return self._logged

    # -- logging -----------------------------------------------------------------------------------
    def log_trial(
        self, record: dict[str, Any], optuna_params: dict[str, Any], train_losses: list[float] | None = None
    ) -> str | None:
        """Log one finished or failed trial as a child run (once: a trial already logged is skipped).

        Args:
            record: the trial's record (see :func:`autopeft.study.trial_record`).
            optuna_params: the sampled values, logged as parameters.
            train_losses: the training loss of each step, logged as the ``train_loss`` metric's history.
        """
        return self._guard(self._log_trial, record, optuna_params, train_losses or [])

    def _log_trial(self, record: dict[str, Any], optuna_params: dict[str, Any], train_losses: list[float]) -> str:
        existing = self._logged.get(record["trial"])  # refreshed from the server by sync(), not per trial
        if existing is not None:
            return existing
        tags = {
            "mlflow.parentRunId": self.parent_id,
            "autopeft.study": self.study,
            "autopeft.role": "trial",
            "autopeft.trial": str(record["trial"]),
            "autopeft.state": record["state"],
        }
        if "fail_reason" in record:
            tags["autopeft.fail_reason"] = str(record["fail_reason"])[:5000]
        metrics = {
            "trainable_params": record.get("trainable_params"),
            "trainable_fraction": record.get("trainable_fraction"),
            "head_params": record.get("head_params"),
            "seconds": record.get("seconds"),
            "target_sparsity": record.get("target_sparsity"),
        }
        if record["state"] in ("COMPLETE", "PRUNED"):  # a pruned trial's metric is the one it was stopped at
            metrics["metric"] = record["metric"]
            metrics["sparsity"] = record.get("sparsity")
            metrics.update(record.get("metrics") or {})
        scores, rung_metrics = record.get("rung_scores") or [], record.get("rung_metrics") or []
        for rung, value in enumerate(scores):
            metrics[f"rung{rung + 1}_score"] = value
        if len(rung_metrics) == len(scores):  # a train_loss rung evaluates only where the trial stops
            metrics.update({f"rung{rung + 1}_metric": value for rung, value in enumerate(rung_metrics)})
        status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(record["state"], "FAILED")
        name = f"trial-{record['trial']} {describe(record.get('params'))}".strip()[:250]
        run_id = self._write_run(name, tags, optuna_params, metrics, record.get("params"), status)
        self._log_curve(run_id, "train_loss", train_losses)
        self._logged[record["trial"]] = run_id
        return run_id

    def _write_run(
        self,
        name: str,
        tags: dict[str, str],
        params: dict[str, Any],
        metrics: dict[str, Any],
        config: dict | None,
        status: str,
        files: list[Path] = (),
    ) -> str:
        from mlflow.entities import Metric, Param

        run_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
        failpoints.pause("mlflow.run")
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None],
            params=[Param(k, str(v)[:6000]) for k, v in params.items()],
        )
        if config is not None:
            self.client.log_dict(run_id, config, "config.json")
        for path in files:
            self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, status)
        return run_id

    def _log_curve(self, run_id: str, key: str, values: list[float]) -> None:
        """Log a per-step series (a training loss curve) as one metric's history, in batches."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        points = [Metric(key, float(v), now, step) for step, v in enumerate(values, 1) if math.isfinite(v)]
        for start in range(0, len(points), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(run_id, metrics=points[start : start + 1000])

    def log_run(
        self, role: str, name: str, record: dict[str, Any], config: dict, tags: dict[str, str], files: list[Path] = ()
    ) -> str | None:
        """Log one seeded run of a fixed configuration (``retrain``, ``baseline``) as a child run.

        Args:
            role: the ``autopeft.role`` tag.
            name: the run's name.
            record: the run's record (see :func:`autopeft.evaluation.run_record`).
            config: the configuration trained.
            tags: further tags (``autopeft.trial``, ``autopeft.baseline`` ...).
            files: files attached to the run (its per-example predictions).
        """
        all_tags = {"mlflow.parentRunId": self.parent_id, "autopeft.study": self.study, "autopeft.role": role}
        all_tags |= {**tags, "autopeft.seed": str(record["seed"]), "autopeft.settings": record["settings"]}
        keys = ("metric", "trainable_params", "trainable_fraction", "sparsity", "steps", "seconds", "epochs")
        metrics = {key: record.get(key) for key in keys} | dict(record.get("metrics") or {})
        params = {"seed": record["seed"], "max_train_samples": record.get("max_train_samples") or "all"}
        return self._guard(self._write_run, name, all_tags, params, metrics, config, "FINISHED", list(files))

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

    def mark_pareto(self, records: list[dict[str, Any]], pareto: set[int], beside: list[dict] = ()) -> None:
        """Tag every child run ``autopeft.pareto=true|false`` and attach ``pareto.csv`` to the parent.

        Args:
            records: records of every trial of the study.
            pareto: trial numbers of the Pareto set.
            beside: records shown beside the Pareto set in ``pareto.csv`` (the status quo's, labelled).
        """
        self._guard(self._mark_pareto, records, pareto, list(beside))

    def _mark_pareto(self, records: list[dict[str, Any]], pareto: set[int], beside: list[dict]) -> None:
        for trial, run_id in self._logged.items():  # the runs known here (sync() reads every worker's)
            tag = "true" if trial in pareto else "false"
            if self._tagged.get(run_id) != tag:  # only what changed: a call per trial per search, not per trial^2
                self.client.set_tag(run_id, PARETO_TAG, tag)
                self._tagged[run_id] = tag
        nested = ("metrics", "confirmations", "rungs")
        chosen = [r for r in records if r["trial"] in pareto] + beside
        rows = [{k: v for k, v in r.items() if k not in nested} for r in chosen]
        buffer = io.StringIO()
        pd.DataFrame(rows).to_csv(buffer, index=False)
        self.client.log_text(self.parent_id, buffer.getvalue(), "pareto.csv")
        self.client.set_tag(self.parent_id, "autopeft.pareto_trials", ",".join(str(t) for t in sorted(pareto)))

    def sync(self, study) -> int:
        """Log every finished or failed trial of ``study`` that has no run yet, then tag the Pareto set.

        Args:
            study: the Optuna study.

        Returns:
            How many trials were logged now.
        """
        from optuna.trial import TrialState

        from autopeft.pareto import status_quo_run
        from autopeft.study import status_quo_record, trial_record

        if not self.enabled:
            return 0
        logged = self._guard(self._child_ids) or {}
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
        missing = [t for t in trials if t.number not in logged]
        for trial in missing:
            self.log_trial(trial_record(trial), trial.params, trial.user_attrs.get("train_losses"))
        quo = status_quo_run(study)
        if quo is not None:
            self.log_status_quo(status_quo_record(quo))
        self.sync_pareto(study)
        return len(missing) if self.enabled else 0

    def log_status_quo(self, record: dict[str, Any]) -> str | None:
        """Log the status quo's run (once) as a child run tagged ``autopeft.role=status_quo``, named by its label.

        Args:
            record: its record (:func:`autopeft.study.status_quo_record`).
        """
        return self._guard(self._log_status_quo, record)

    def _log_status_quo(self, record: dict[str, Any]) -> str:
        found = self._runs("tags.`autopeft.role` = 'status_quo'")
        if found:
            return found[0].info.run_id
        tags = {"mlflow.parentRunId": self.parent_id, "autopeft.study": self.study, "autopeft.role": "status_quo"}
        tags |= {"autopeft.trial": "status_quo", "autopeft.state": record["state"], PARETO_TAG: "status_quo"}
        metrics = {"metric": record["metric"], "trainable_params": record["trainable_params"]}
        metrics |= {"trainable_fraction": record["trainable_fraction"], **(record.get("metrics") or {})}
        for rung, entry in enumerate(record.get("rungs") or []):
            metrics[f"rung{rung + 1}_score"] = entry["score"]
        name = f"status quo: {record['label']}"
        return self._write_run(name, tags, {"seed": record.get("seed")}, metrics, record.get("params"), "FINISHED")

    def sync_pareto(self, study) -> None:
        """Tag the study's current Pareto set on the child runs and write ``pareto.csv`` on the parent.

        Args:
            study: the Optuna study.
        """
        from autopeft.pareto import confirmation_runs, pareto_trials, status_quo_run
        from autopeft.study import status_quo_record, trial_record

        confirmations = confirmation_runs(study)
        records = [trial_record(t, None, confirmations.get(t.number)) for t in study.get_trials(deepcopy=False)]
        quo = status_quo_run(study)
        beside = [status_quo_record(quo)] if quo is not None else []
        self.mark_pareto(records, {t.number for t in pareto_trials(study)}, beside)

    def finish(self, status: str = "FINISHED") -> None:
        """Mark the parent run finished (a continued study re-opens it); nothing for an attached tracker."""
        if not self.attach:
            self._guard(lambda: self.client.set_terminated(self.parent_id, status))
