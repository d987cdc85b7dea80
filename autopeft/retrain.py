"""Retrain chosen trials of a study at full fidelity with several seeds.

Each seeded run is stored in the study as soon as it ends (study user attribute ``autopeft.retrain.<trial>``:
a list of run records, a plain Optuna attribute any Optuna tool reads) and logged to MLflow as a child of the
study's parent run (``autopeft.role=retrain``). A run already stored for the same seed and settings is not
repeated, so an interrupted retrain continues.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autopeft import keys
from autopeft.errors import AutopeftError
from autopeft.evaluation import RunPlan, predictions_file, run_record, settings_key, train_seeds
from autopeft.methods.build import describe
from autopeft.models import backbone_info
from autopeft.pareto import task_metric
from autopeft.results import SeedSummary, summarize
from autopeft.runs_dir import RunsDir
from autopeft.study import Pick, StudyView
from autopeft.tasks import get_task
from autopeft.tracking import StudyTracker
from autopeft.training import ProxySettings


@dataclass
class Retrained:
    """One retrained configuration.

    Attributes:
        trial: its trial number, or ``status_quo``.
        search_metric: the metric it reached in the search.
        summary: its metric over the seeds at these settings.
        settings: the settings label (``e3-all-b16-l128``).
        failed: seeds whose run failed.
    """

    trial: int | str
    search_metric: float | None
    summary: SeedSummary | None
    settings: str
    failed: int = 0


def chosen_trials(view: StudyView, picks: list[str]) -> list[Pick]:
    """What ``picks`` name: ``pareto`` (the whole Pareto set), ``knee``, ``best`` (the status quo when nothing
    beat it), trial numbers.

    Args:
        view: the study.
        picks: the choices, in order; duplicates are dropped.
    """
    chosen: dict[object, Pick] = {}
    for pick in picks:
        if pick == "pareto":
            if not view.pareto:
                raise AutopeftError(f"study {view.name!r} has no finished trial yet")
            chosen.update((t.number, Pick(str(t.number), t)) for t in view.pareto_trials)
        else:
            found = view.pick(pick)
            chosen[found.key] = found
    return list(chosen.values())


def retrain(
    view: StudyView,
    picks: list[Pick],
    seeds: list[int],
    settings: ProxySettings,
    runs_dir: str | Path,
    data_dir: str | None = None,
    tracking_uri: str | None = None,
    on_run: Callable[[int | str, int, dict[str, Any]], None] | None = None,
    on_stored: Callable[[int], None] | None = None,
) -> list[Retrained]:
    """Retrain the chosen picks of a study with each seed; store and log every run as it ends.

    Args:
        view: the study.
        picks: what to retrain (see :func:`chosen_trials`).
        seeds: the seeds.
        settings: the training settings (full fidelity: every training example, several epochs).
        runs_dir: the runs folder (tokenisation cache, masks, predictions, MLflow artifacts).
        data_dir: folder of data_dir tasks (default: the study's).
        tracking_uri: MLflow store (default: the runs folder's).
        on_run: called with ``(trial, seed, result)`` after each run.
        on_stored: called once, before training, with how many runs are stored already (not trained again).
    """
    study, what = view.study, view.spec.what
    task = get_task(what.task)
    info = backbone_info(view.backbone, task.num_labels, what.trust_remote_code)
    runs = RunsDir.at(runs_dir)
    plan = RunPlan.in_runs_dir(
        view.backbone, what.task, data_dir or what.data_dir, settings, runs.root, view.name, keep_models=True
    )
    uri = tracking_uri or runs.tracking_uri
    tracker = StudyTracker(
        uri, view.name, runs.artifacts, view.spec.to_dict(), attach=True, task=what.task, data_dir=plan.data_dir
    )
    key = settings_key(settings)
    done_by_pick = {
        pick.key: {r["seed"] for r in view.retrains.get(pick.key, []) if r["settings"] == key and "metric" in r}
        for pick in picks
    }  # failed seeds run again
    if on_stored is not None:
        on_stored(sum(len(set(seeds) & done) for done in done_by_pick.values()))
    results = []
    for pick in picks:
        number, config = pick.key, pick.config
        stored = list(view.retrains.get(number, []))
        done = done_by_pick[number]

        def store(seed: int, result: dict[str, Any], number=number, config=config, stored: list = stored) -> None:
            if "fail_reason" in result:
                stored.append({"seed": seed, "settings": key, "fail_reason": result["fail_reason"]})
            else:
                record = run_record(result, info, settings)
                stored.append(record)
                name = f"retrain-{'trial-' if isinstance(number, int) else ''}{number}-seed{seed}"
                tags = {keys.TAG_TRIAL: str(number)}
                tracker.log_run("retrain", name, record, config.to_dict(), tags, predictions_file(record, plan))
            study.set_user_attr(f"{keys.RETRAIN_PREFIX}{number}", stored)
            if on_run is not None:
                on_run(number, seed, result)

        pending = [s for s in seeds if s not in done]
        label = f"{'trial-' if isinstance(number, int) else ''}{number}"
        trial_plan = dataclasses.replace(plan, provenance={**plan.provenance, "trial": number})
        train_seeds(config, trial_plan, pending, store, label=label, command="retrain")
        ok = [r for r in stored if r["settings"] == key and "metric" in r]
        failed = sum(1 for r in stored if r["settings"] == key and "fail_reason" in r)
        results.append(Retrained(number, task_metric(pick.trial), summarize(ok) if ok else None, key, failed))
    return results


def register_picks(
    view: StudyView,
    picks: list[str],
    runs_dir: str | Path,
    data_dir: str | None = None,
    tracking_uri: str | None = None,
) -> dict[str, str]:
    """Put the retrained models of ``best`` and ``knee`` in MLflow's model registry under the study's name, with the
    aliases :data:`autopeft.keys.MODEL_ALIASES` names (``champion`` for ``best``: the status quo's model when
    nothing beat it). Each is the seed closest to its seeds' mean, logged on that seed's retrain run.

    Args:
        view: the study (read after its retrain).
        picks: what ``retrain`` was asked (only ``best`` and ``knee`` are registered).
        runs_dir: the runs folder the retrained models lie in.
        data_dir: folder of data_dir tasks (the input example's rows; default: the study's).
        tracking_uri: MLflow store (default: the runs folder's).

    Returns:
        Alias -> registered version, of those registered now.
    """
    import pandas as pd

    from autopeft.evaluation import kept_path
    from autopeft.export import retrained_models
    from autopeft.results import closest_to_mean
    from autopeft.tracking.registry import register_trained

    names = [p for p in picks if p in keys.MODEL_ALIASES]
    if not names:
        return {}
    what, runs = view.spec.what, RunsDir.at(runs_dir)
    tracker = StudyTracker(tracking_uri or runs.tracking_uri, view.name, runs.artifacts, attach=True)
    task = get_task(what.task)
    texts = task.load_split("validation", data_dir or what.data_dir).texts
    example = pd.DataFrame({field: column[:3] for field, column in zip(task.text_fields, texts, strict=True)})
    by_key: dict[int | str, tuple[Pick, list[str]]] = {}
    for name in names:
        pick = view.pick(name)
        by_key.setdefault(pick.key, (pick, []))[1].append(keys.MODEL_ALIASES[name])
    registered = {}
    for key, (pick, aliases) in by_key.items():
        seeded = retrained_models(view, key, str(key))
        run = closest_to_mean(seeded)
        runs_of = [r for r in tracker.runs("retrain") if r.data.tags.get(keys.TAG_TRIAL) == str(key)]
        found = [r.info.run_id for r in runs_of if r.data.tags.get(keys.TAG_SEED) == str(run["seed"])]
        if not found:
            continue  # the run was not logged (tracking was off): `autopeft sync` does not register models
        stats = summarize(seeded)
        what = "the status quo" if pick.is_status_quo else f"trial {key}"
        description = (
            f"{' and '.join(f'@{a}' for a in aliases)} of study {view.name}: {what} "
            f"({describe(pick.config.to_dict())}); "
            f"the seed closest to the mean: seed {run['seed']}, validation {task.metric} {run['metric']:.4f} "
            f"(mean {stats.mean:.4f} ± {stats.std:.4f} over {stats.seeds} seeds, {run['settings']})"
        )
        description += f". {pick.verdict}" if pick.verdict else ""
        tags = {keys.TAG_STUDY: view.name, keys.TAG_TRIAL: str(key), keys.TAG_SEED: str(run["seed"])}
        folder = kept_path(run["model"], runs.root)
        version = register_trained(tracker, folder, found[0], aliases, example, description, tags)
        registered |= dict.fromkeys(aliases, version) if version else {}
    return registered
