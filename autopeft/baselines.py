"""Hand-made reference configurations (:mod:`autopeft.references`), sized to a budget, trained beside a study.

Results live in a plain Optuna study named ``<task>-<model>-<budget>-baselines`` in the study
storage, one COMPLETE (or FAIL) trial per baseline and seed, with values ``[metric,
trainable_fraction]`` and the configuration in its user attributes; runs are logged to the MLflow
experiment of the same name. ``autopeft report`` finds them through the study's task, model and
budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from autopeft import keys
from autopeft.errors import AutopeftError
from autopeft.evaluation import RunPlan, predictions_file, run_record, settings_key, train_seeds
from autopeft.methods.build import count_trainable
from autopeft.models import BackboneInfo
from autopeft.references import BASELINES, Baseline
from autopeft.results import SeedSummary, summarize


def baselines_study_name(task: str, model: str, budget: str) -> str:
    """The name of the Optuna study holding the baselines of a task, backbone and budget.

    Args:
        task: the task's name.
        model: HF id or folder of the backbone.
        budget: the budget as written (``0.5%``).
    """
    from autopeft.study import study_slug

    return study_slug(task, model, budget, "baselines")


def open_baselines_study(storage: str, name: str) -> optuna.Study:
    """Create or open the baselines study (directions: maximise the metric, minimise the fraction).

    Args:
        storage: the Optuna storage URL.
        name: its name (see :func:`baselines_study_name`).
    """
    from autopeft.study import connect_storage

    return optuna.create_study(
        study_name=name, storage=connect_storage(storage), directions=["maximize", "minimize"], load_if_exists=True
    )


@dataclass
class BaselineResult:
    """One baseline over its seeds.

    Attributes:
        name: the baseline.
        label: its label.
        trainable_params: its trainable count (head excluded).
        trainable_fraction: that count over the backbone's.
        over_budget: whether it exceeds the budget's limit.
        summary: its metric over the seeds (``None`` when every seed failed).
        settings: the settings label.
    """

    name: str
    label: str
    trainable_params: int
    trainable_fraction: float
    over_budget: bool
    summary: SeedSummary | None
    settings: str


def run_baselines(
    study: optuna.Study,
    names: list[str],
    info: BackboneInfo,
    limit: int,
    plan: RunPlan,
    seeds: list[int],
    tracker=None,
    learning_rate: float | None = None,
    on_run: Callable[[str, int, dict[str, Any]], None] | None = None,
    on_stored: Callable[[int], None] | None = None,
) -> list[BaselineResult]:
    """Train each named baseline with each seed; store every run as a trial of ``study`` as it ends.

    A baseline already stored for a seed and these settings is not trained again.

    Args:
        study: the baselines study (see :func:`open_baselines_study`).
        names: baselines to run (keys of :data:`BASELINES`).
        info: the backbone.
        limit: the budget's parameter limit.
        plan: model, task, data and settings.
        seeds: the seeds.
        tracker: the baselines study's :class:`autopeft.tracking.StudyTracker`, or ``None``.
        learning_rate: one learning rate for every baseline instead of their usual ones.
        on_run: called with ``(baseline, seed, result)`` after each run.
        on_stored: called once, before training, with how many runs are stored already (not trained again).
    """
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise AutopeftError(f"--only: unknown baseline {unknown[0]!r}; known: {', '.join(BASELINES)}")
    key = settings_key(plan.settings)
    done_by_name = {name: set() for name in names}
    for t in stored_runs(study):
        if t.user_attrs.get("baseline") in done_by_name and t.user_attrs.get("settings") == key and t.values:
            done_by_name[t.user_attrs["baseline"]].add(t.user_attrs["seed"])
    if on_stored is not None:
        on_stored(sum(len(set(seeds) & done) for done in done_by_name.values()))
    results = []
    for name in names:
        baseline = BASELINES[name]
        config = baseline.config(info, limit, learning_rate)
        count = count_trainable(config, info)
        done = done_by_name[name]

        def store(seed: int, result: dict[str, Any], baseline: Baseline = baseline, config=config) -> None:
            attrs = {"baseline": baseline.name, "label": baseline.label, "config": config.to_dict(), "seed": seed}
            if "fail_reason" in result:
                attrs |= {"settings": key, "fail_reason": result["fail_reason"]}
                study.add_trial(_frozen(optuna.trial.TrialState.FAIL, None, attrs))
            else:
                record = run_record(result, info, plan.settings)
                attrs |= record
                values = [record["metric"], record["trainable_fraction"]]
                study.add_trial(_frozen(optuna.trial.TrialState.COMPLETE, values, attrs))
                if tracker is not None:
                    tags = {keys.TAG_BASELINE: baseline.name}
                    files = predictions_file(record, plan)
                    tracker.log_run("baseline", f"{baseline.name}-seed{seed}", record, config.to_dict(), tags, files)
            if on_run is not None:
                on_run(baseline.name, seed, result)

        train_seeds(config, plan, [s for s in seeds if s not in done], store, label=name, command="baselines")
        ok = [t.user_attrs for t in stored_runs(study) if t.user_attrs.get("baseline") == name and t.values]
        ok = [r for r in ok if r.get("settings") == key]
        results.append(
            BaselineResult(
                name,
                baseline.label,
                count,
                info.fraction(count),
                count > limit,
                summarize(ok) if ok else None,
                key,
            )
        )
    return results


def _frozen(state, values, attrs: dict[str, Any]) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(state=state, values=values, user_attrs=attrs)


def stored_runs(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The finished and failed runs of a baselines study.

    Args:
        study: the baselines study.
    """
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
    return study.get_trials(deepcopy=False, states=states)


def baseline_points(study: optuna.Study) -> list[dict[str, Any]]:
    """Each baseline's mean metric over seeds and its trainable fraction (the latest settings of each).

    Args:
        study: the baselines study.
    """
    by_name: dict[str, list[dict]] = {}
    for trial in stored_runs(study):
        if trial.values:
            by_name.setdefault(trial.user_attrs["baseline"], []).append(trial.user_attrs)
    points = []
    for name, runs in by_name.items():
        settings = runs[-1]["settings"]
        latest = [r for r in runs if r["settings"] == settings]
        summary = summarize(latest)
        points.append(
            {
                "baseline": name,
                "label": latest[-1]["label"],
                "trainable_params": latest[-1]["trainable_params"],
                "trainable_fraction": latest[-1]["trainable_fraction"],
                "metric_mean": summary.mean,
                "metric_std": summary.std,
                "seeds": summary.seeds,
                "settings": settings,
            }
        )
    return points


def run_baselines_beside(
    task_ref: str,
    budget_text: str,
    model: str,
    names: list[str],
    settings,
    seeds: list[int],
    storage: str,
    runs_dir: str | Path,
    tracking_uri: str | None = None,
    data_dir: str | None = None,
    learning_rate: float | None = None,
    trust_remote_code: bool = False,
    on_run: Callable[[str, int, dict[str, Any]], None] | None = None,
    on_stored: Callable[[int], None] | None = None,
) -> tuple[str, list[BaselineResult]]:
    """Train the named baselines of a task, backbone and budget into their study (``autopeft baselines``).

    Args:
        task_ref: a built-in task or a task file.
        budget_text: the budget as written (``0.5%``).
        model: HF id or folder of the backbone.
        names: baselines to run (keys of :data:`BASELINES`).
        settings: the training settings (``ProxySettings``).
        seeds: the seeds.
        storage: the Optuna storage URL.
        runs_dir: the runs folder.
        tracking_uri: the MLflow store (default: the runs folder's).
        data_dir: folder of data_dir tasks.
        learning_rate: one learning rate for every baseline instead of their usual ones.
        trust_remote_code: allow the backbone's own code.
        on_run: called with ``(baseline, seed, result)`` after each run.
        on_stored: called once, before training, with how many runs are stored already.

    Returns:
        The baselines study's name, and each baseline's result.
    """
    from autopeft.budget import parse_budget
    from autopeft.models import backbone_info, resolve_backbone
    from autopeft.runs_dir import RunsDir
    from autopeft.tasks import get_task, task_reference
    from autopeft.tracking import StudyTracker

    task = get_task(task_ref)
    budget = parse_budget(budget_text)
    backbone = resolve_backbone(model)  # the study's recorded backbone, loaded from where it is here
    info = backbone_info(backbone, task.num_labels, trust_remote_code)
    limit = budget.limit(info.backbone_params)
    name = baselines_study_name(task.name, model, budget_text)
    study = open_baselines_study(storage, name)
    described = {"task": task_reference(task_ref), "model": model, "budget": budget_text, "limit": limit}
    study.set_user_attr(keys.BASELINES, described)
    runs = RunsDir.at(runs_dir)
    tracker = StudyTracker(
        tracking_uri or runs.tracking_uri, name, runs.artifacts, described, task=task_reference(task_ref),
        data_dir=data_dir,
    )  # fmt: skip
    plan = RunPlan.in_runs_dir(backbone, task_reference(task_ref), data_dir, settings, runs_dir, name)
    results = run_baselines(study, names, info, limit, plan, seeds, tracker, learning_rate, on_run, on_stored)
    tracker.finish()
    return name, results
