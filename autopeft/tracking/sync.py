"""Syncing a study into MLflow: what its trials, its status quo and its seeded runs become there, and its Pareto set.

:class:`StudyTracker` adds to the MLflow adaptor (:class:`autopeft.tracking.mlflow.Tracker`) what autopeft's
records mean: a trial's run (named by its configuration and score, its sampled values as ``space.*``
parameters, its loss curve), the status quo's run, the runs of ``retrain``, ``baselines`` and confirmations,
the Pareto tags and ``pareto.csv``. A trial is logged once; a run left half written by a killed process is
written again; :meth:`StudyTracker.sync` logs whatever a search could not (tracking down, a kill).
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pandas as pd

from autopeft import keys
from autopeft.methods.build import describe
from autopeft.tracking.mlflow import Tracker


class StudyTracker(Tracker):
    """A study's runs in MLflow (see the module docstring).

    Args:
        uri: MLflow tracking URI (``sqlite:///...`` or ``http://host:port``).
        study: the study's name (also the experiment's name).
        artifact_dir: where artifacts go for a local SQLite store (ignored for servers).
        spec: the study's spec, logged as the parent run's ``spec.*`` parameters.
        attach: only add runs and files to the parent (``retrain``, ``report``): its status is left as it is.
        stale_s: seconds after which a trial run still RUNNING was left by a killed process (the study's
            heartbeat grace).
        task: the task the runs train on (a built-in name or a task file): each run logs its data files as
            MLflow datasets (:meth:`run_inputs`); ``None``: none logged.
        data_dir: the folder of ``data_dir`` tasks.
    """

    def __init__(
        self,
        uri: str,
        study: str,
        artifact_dir: str | Path | None = None,
        spec: dict | None = None,
        attach: bool = False,
        stale_s: float = 30.0,
        task: str | None = None,
        data_dir: str | None = None,
    ) -> None:
        self.stale_s = stale_s
        self.task, self.data_dir = task, data_dir
        self._inputs: dict[str, list[dict[str, Any]]] = {}
        self._logged: dict[int, str] = {}
        self._tagged: dict[str, str] = {}
        super().__init__(uri, study, artifact_dir, spec, attach)
        if not attach:
            self.guarded(self._log_parent_inputs)

    def _log_parent_inputs(self) -> None:
        """The parent run names the study's data files once (the collapsed Runs table shows them)."""
        from autopeft.tracking.mlflow import dataset_input

        inputs = self.run_inputs("parent")
        if inputs and not self.client.get_run(self.parent_id).inputs.dataset_inputs:
            self.client.log_inputs(self.parent_id, datasets=[dataset_input(entry) for entry in inputs])

    def _child_ids(self) -> dict[int, str]:
        """Trial number -> run id of every trial run of the study, read from the server (any worker's).

        A run still RUNNING after the heartbeat grace was left by a process killed while writing it: it is
        deleted, so that the trial is logged again, whole.
        """
        runs = self.runs("trial")
        now = time.time() * 1000
        for orphan in [r for r in runs if r.info.status == "RUNNING" and now - r.info.start_time > 1000 * self.stale_s]:
            self.delete(orphan.info.run_id)
            runs.remove(orphan)
        self._logged = {int(r.data.tags[keys.TAG_TRIAL]): r.info.run_id for r in runs}
        self._tagged = {r.info.run_id: r.data.tags.get(keys.TAG_PARETO) for r in runs}
        return self._logged

    def run_inputs(self, role: str) -> list[dict[str, Any]]:
        """The data files a run of ``role`` trained and was scored on, as dataset records (``name``, ``context``,
        ``path``, ``sha256``, ``rows``): the train split, and the selection split for a search's runs (its own file, or
        the train file it is held out of), the validation split for ``retrain`` and ``baseline`` runs.

        Args:
            role: the run's ``autopeft.role``.
        """
        if self.task is None:
            return []
        if role not in self._inputs:  # read once per role: a search logs a run per trial
            self._inputs[role] = self._read_inputs(role)
        return self._inputs[role]

    def _read_inputs(self, role: str) -> list[dict[str, Any]]:
        from autopeft.tasks import get_task

        task = get_task(self.task)
        train = task.split_file("train", self.data_dir)
        if role in ("retrain", "baseline"):
            scored, split = task.split_file("validation", self.data_dir), "validation"
        else:
            scored, split = task.split_file("selection", self.data_dir) or train, "selection"
        found = [(train, "train", "training"), (scored, split, "evaluation")]
        return [{**f, "name": f"{task.name}-{name}", "context": context} for f, name, context in found if f]

    # -- logging
    def log_trial(
        self, record: dict[str, Any], optuna_params: dict[str, Any], train_losses: list[float] | None = None
    ) -> str | None:
        """Log one finished or failed trial as a child run (once: a trial already logged is skipped).

        Args:
            record: the trial's record (see :func:`autopeft.study.trial_record`).
            optuna_params: the sampled values, logged as parameters.
            train_losses: the training loss of each step, logged as the ``train_loss`` metric's history.
        """
        return self.guarded(self._log_trial, record, optuna_params, train_losses or [])

    def _log_trial(self, record: dict[str, Any], optuna_params: dict[str, Any], train_losses: list[float]) -> str:
        existing = self._logged.get(record["trial"])  # refreshed from the server by sync(), not per trial
        if existing is not None:
            return existing
        tags = {
            "mlflow.parentRunId": self.parent_id,
            keys.TAG_STUDY: self.study,
            keys.TAG_ROLE: "trial",
            keys.TAG_TRIAL: str(record["trial"]),
            keys.TAG_STATE: record["state"],
        }
        if "fail_reason" in record:
            tags[keys.TAG_FAIL_REASON] = str(record["fail_reason"])[:5000]
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
        score = f" {record['metric']:.4f}" if record["state"] == "COMPLETE" and record.get("metric") is not None else ""
        name = f"trial-{record['trial']}{score} {describe(record.get('params'))}".strip()[:250]
        params = {f"{keys.PARAM_SPACE}{k}": v for k, v in optuna_params.items()}
        inputs = self.run_inputs("trial")
        run_id = self.write_run(name, tags, params, metrics, record.get("params"), status, inputs=inputs)
        self.log_curve(run_id, "train_loss", train_losses)
        self._logged[record["trial"]] = run_id
        return run_id

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
        all_tags = {"mlflow.parentRunId": self.parent_id, keys.TAG_STUDY: self.study, keys.TAG_ROLE: role}
        all_tags |= {**tags, keys.TAG_SEED: str(record["seed"]), keys.TAG_SETTINGS: record["settings"]}
        shown = ("metric", "trainable_params", "trainable_fraction", "sparsity", "steps", "seconds", "epochs")
        metrics = {key: record.get(key) for key in shown} | dict(record.get("metrics") or {})
        params = {"seed": record["seed"], "max_train_samples": record.get("max_train_samples") or "all"}
        inputs = self.run_inputs(role)
        return self.guarded(self.write_run, name, all_tags, params, metrics, config, "FINISHED", list(files), inputs)

    def mark_pareto(self, records: list[dict[str, Any]], pareto: set[int], beside: list[dict] = ()) -> None:
        """Tag every child run ``autopeft.pareto=true|false`` and attach ``pareto.csv`` to the parent.

        Args:
            records: records of every trial of the study.
            pareto: trial numbers of the Pareto set.
            beside: records shown beside the Pareto set in ``pareto.csv`` (the status quo's, labelled).
        """
        self.guarded(self._mark_pareto, records, pareto, list(beside))

    def _mark_pareto(self, records: list[dict[str, Any]], pareto: set[int], beside: list[dict]) -> None:
        for trial, run_id in self._logged.items():  # the runs known here (sync() reads every worker's)
            tag = "true" if trial in pareto else "false"
            if self._tagged.get(run_id) != tag:  # only what changed: a call per trial per search, not per trial^2
                self.set_tag(run_id, keys.TAG_PARETO, tag)
                self._tagged[run_id] = tag
        nested = ("metrics", "confirmations", "rungs")
        chosen = [r for r in records if r["trial"] in pareto] + beside
        rows = [{k: v for k, v in r.items() if k not in nested} for r in chosen]
        buffer = io.StringIO()
        pd.DataFrame(rows).to_csv(buffer, index=False)
        self.attach_text(buffer.getvalue(), "pareto.csv")
        self.set_tag(self.parent_id, keys.TAG_PARETO_TRIALS, ",".join(str(t) for t in sorted(pareto)))
        self.set_tag(self.parent_id, keys.TAG_NOTE, self.pareto_note(records, pareto))

    def pareto_note(self, records: list[dict[str, Any]], pareto: set[int]) -> str:
        """The parent run's description: its Pareto set, each trial a link to its run (named by its score).

        Args:
            records: records of every trial of the study.
            pareto: trial numbers of the Pareto set.
        """
        count = f"{len(pareto)} trial{'s' if len(pareto) != 1 else ''}"
        lines = [f"**{self.study}**: the Pareto set ({count}; best metric first)", ""]
        chosen = sorted((r for r in records if r["trial"] in pareto), key=lambda r: -(r.get("metric") or 0.0))
        for record in chosen:
            run_id = self._logged.get(record["trial"])
            share = 100 * (record.get("trainable_fraction") or 0.0)
            what = f"trial {record['trial']}: metric {record.get('metric', float('nan')):.4f}, "
            what += f"{record.get('trainable_params', 0):,} trainable ({share:.3f}%)"
            link = f"#/experiments/{self.experiment_id}/runs/{run_id}" if run_id else None
            lines.append(f"- [{what}]({link})" if link else f"- {what}")
        return "\n".join(lines)

    def sync(self, study) -> int:
        """Log every finished or failed trial of ``study`` that has no run yet and its status quo, then tag the
        Pareto set.

        Args:
            study: the Optuna study.

        Returns:
            How many trials were logged now.
        """
        from optuna.trial import TrialState

        from autopeft.study import StudyView

        if not self.enabled:
            return 0
        logged = self.guarded(self._child_ids) or {}
        view = StudyView(study)
        ended = view.states(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        missing = [t for t in ended if t.number not in logged]
        for trial in missing:
            self.log_trial(view.record(trial.number), trial.params, trial.user_attrs.get("train_losses"))
        quo = view.status_quo_record()
        if quo is not None:
            self.log_status_quo(quo)
        self.sync_pareto(study)
        return len(missing) if self.enabled else 0

    def log_status_quo(self, record: dict[str, Any]) -> str | None:
        """Log the status quo's run (once) as a child run tagged ``autopeft.role=status_quo``, named by its label.

        Args:
            record: its record (:func:`autopeft.study.status_quo_record`).
        """
        return self.guarded(self._log_status_quo, record)

    def _log_status_quo(self, record: dict[str, Any]) -> str:
        found = self.runs("status_quo")
        if found:
            return found[0].info.run_id
        tags = {"mlflow.parentRunId": self.parent_id, keys.TAG_STUDY: self.study, keys.TAG_ROLE: "status_quo"}
        tags |= {keys.TAG_TRIAL: "status_quo", keys.TAG_STATE: record["state"], keys.TAG_PARETO: "status_quo"}
        metrics = {"metric": record["metric"], "trainable_params": record["trainable_params"]}
        metrics |= {"trainable_fraction": record["trainable_fraction"], **(record.get("metrics") or {})}
        for rung, entry in enumerate(record.get("rungs") or []):
            metrics[f"rung{rung + 1}_score"] = entry["score"]
        name = f"status quo {record['metric']:.4f}: {record['label']}"
        params, inputs = {"seed": record.get("seed")}, self.run_inputs("status_quo")
        return self.write_run(name, tags, params, metrics, record.get("params"), "FINISHED", inputs=inputs)

    def sync_pareto(self, study) -> None:
        """Tag the study's current Pareto set on the child runs and write ``pareto.csv`` (the status quo beside it)
        on the parent.

        Args:
            study: the Optuna study.
        """
        from autopeft.study import StudyView

        view = StudyView(study)
        records = [view.record(t.number) for t in view.trials]
        quo = view.status_quo_record()
        self.mark_pareto(records, {t.number for t in view.pareto_trials}, [quo] if quo else [])
