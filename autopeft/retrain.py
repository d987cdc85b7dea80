"""Retrain chosen trials of a study at full fidelity with several seeds.

Each seeded run is stored in the study as soon as it ends (study user attribute
``autopeft.retrain.<trial>``: a list of run records, a plain Optuna attribute any Optuna tool
reads) and logged to MLflow as a child of the study's parent run (``autopeft.role=retrain``). A run
already stored for the same seed and settings is not repeated, so an interrupted retrain continues.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from autopeft.errors import AutopeftError
from autopeft.evaluation import RunPlan, predictions_file, run_record, settings_key, train_seeds
from autopeft.methods.config import TrialConfig
from autopeft.models import backbone_info
from autopeft.pareto import Pick, answer, pareto_trials, task_metric
from autopeft.results import RETRAIN_ATTR, STATUS_QUO_KEY, SeedSummary, retrain_runs, summarize
from autopeft.study import default_tracking_uri, spec_of, study_backbone, trial_config
from autopeft.tasks import get_task
from autopeft.tracking import Tracker
from autopeft.training import ProxySettings


@dataclass
class Retrained:
    """One retrained configuration.

    Attributes:
        trial: its trial number, or ``status_quo``.
        search_metric: the metric it reached in the search (proxy training).
        summary: its metric over the seeds at these settings.
        settings: the settings label (``e3-all-b16-l128``).
        failed: seeds whose run failed.
    """

    trial: int | str
    search_metric: float | None
    summary: SeedSummary | None
    settings: str
    failed: int = 0


def chosen_trials(study: optuna.Study, picks: list[str]) -> list[Pick]:
    """What ``picks`` name: ``pareto`` (the whole Pareto set), ``knee``, ``best`` (the status quo when nothing
    beat it), trial numbers.

    Args:
        study: the study.
        picks: the choices, in order; duplicates are dropped.
    """
    chosen: dict[object, Pick] = {}
    for pick in picks:
        if pick == "pareto":
            front = pareto_trials(study)
            if not front:
                raise AutopeftError(f"study {study.study_name!r} has no finished trial yet")
            chosen.update((t.number, Pick(str(t.number), t)) for t in front)
        else:
            found = answer(study, pick)
            chosen[retrain_key(found)] = found
    return list(chosen.values())


def retrain_key(pick: Pick) -> int | str:
    """Under which key a pick's retrain runs are stored: its trial number, or ``status_quo``."""
    return STATUS_QUO_KEY if pick.is_status_quo else pick.trial.number


def retrain(
    study: optuna.Study,
    trials: list[Pick],
    seeds: list[int],
    settings: ProxySettings,
    runs_dir: str | Path,
    data_dir: str | None = None,
    tracking_uri: str | None = None,
    on_run: Callable[[int, int, dict[str, Any]], None] | None = None,
) -> list[Retrained]:
    """Retrain the chosen trials of a study with each seed; store and log every run as it ends.

    Args:
        study: the study.
        trials: what to retrain (see :func:`chosen_trials`).
        seeds: the seeds.
        settings: the training settings (full fidelity: every training example, several epochs).
        runs_dir: the runs folder (tokenisation cache, masks, MLflow artifacts).
        data_dir: folder of data_dir tasks (default: the study's).
        tracking_uri: MLflow store (default: the runs folder's).
        on_run: called with ``(trial, seed, result)`` after each run.
    """
    spec = spec_of(study)
    task = get_task(spec["task"])
    model = study_backbone(spec)
    info = backbone_info(model, task.num_labels, spec.get("trust_remote_code", False))
    runs_dir = Path(runs_dir).resolve()
    plan = RunPlan.in_runs_dir(
        model, spec["task"], data_dir or spec.get("data_dir"), settings, runs_dir, study.study_name
    )
    uri = tracking_uri or default_tracking_uri(runs_dir)
    tracker = Tracker(uri, study.study_name, os.path.join(runs_dir, "mlartifacts"), spec, attach=True)
    key = settings_key(settings)
    results = []
    for pick in trials:
        trial, number = pick.trial, retrain_key(pick)
        config = TrialConfig.from_dict(trial.user_attrs["config"]) if pick.is_status_quo else trial_config(trial)
        runs = retrain_runs(study, number)
        done = {r["seed"] for r in runs if r["settings"] == key and "metric" in r}  # failed seeds run again

        def store(seed: int, result: dict[str, Any], number=number, config=config, runs: list = runs) -> None:
            if "fail_reason" in result:
                runs.append({"seed": seed, "settings": key, "fail_reason": result["fail_reason"]})
            else:
                record = run_record(result, info, settings)
                runs.append(record)
                name = f"retrain-{'trial-' if isinstance(number, int) else ''}{number}-seed{seed}"
                tags = {"autopeft.trial": str(number)}
                tracker.log_run("retrain", name, record, config.to_dict(), tags, predictions_file(record, plan))
            study.set_user_attr(f"{RETRAIN_ATTR}{number}", runs)
            if on_run is not None:
                on_run(number, seed, result)

        pending = [s for s in seeds if s not in done]
        train_seeds(config, plan, pending, store, label=f"trial-{number}", command="retrain")
        ok = [r for r in runs if r["settings"] == key and "metric" in r]
        failed = sum(1 for r in runs if r["settings"] == key and "fail_reason" in r)
        metric = task_metric(trial)  # the task metric as the search measured it
        results.append(Retrained(number, metric, summarize(ok) if ok else None, key, failed))
    return results
