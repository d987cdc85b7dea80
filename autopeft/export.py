"""Export what a study's pick answers as a folder (the format is :mod:`autopeft.model_folder`'s): its configuration,
and with ``trained`` the weights a ``retrain`` of it kept."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopeft import keys
from autopeft.errors import AutopeftError
from autopeft.evaluation import kept_path
from autopeft.model_folder import copy_trained, write_export
from autopeft.models import backbone_info
from autopeft.results import closest_to_mean
from autopeft.runs_dir import RunsDir

if TYPE_CHECKING:
    from autopeft.study import StudyView


TRAINED_CHOICES = ("closest", "all")
"""What ``export --trained`` writes: the retrained seed closest to the seeds' mean, or every seed (``seed-<k>/``)."""


def export_trial(
    view: StudyView, pick: str, out: str | Path, trained: str | None = None, runs_dir: str | Path | None = None
) -> dict[str, Any]:
    """Export what a pick answers (see the module docstring for what is written): a trial, or, when ``best``
    found nothing that beat it, the status quo with that verdict.

    Args:
        view: the study.
        pick: ``knee``, ``best`` or a trial number (see :meth:`autopeft.study.StudyView.pick`).
        out: the output folder (created).
        trained: also the weights ``retrain`` kept of it (:data:`TRAINED_CHOICES`); ``None``: the configuration only.
        runs_dir: the runs folder the retrained models lie in.

    Returns:
        The content of ``autopeft.json`` (with ``all``: the first seed's).

    Raises:
        AutopeftError: ``trained`` is asked and no retrained model of the pick is kept.
    """
    from autopeft.tasks import get_task

    chosen = view.pick(pick)
    trial, spec = chosen.trial, view.spec
    task = get_task(spec.what.task)
    info = backbone_info(view.backbone, task.num_labels, spec.what.trust_remote_code)
    record = view.status_quo_record() if chosen.is_status_quo else view.record(trial.number)
    summary = {
        "task": spec.what.task,  # a built-in name, or a task file's path
        "task_name": task.name,
        "study": view.name,
        "trial": chosen.key,
        "pick": pick,
        "status_quo": chosen.is_status_quo,
        "verdict": chosen.verdict,  # why the status quo, when nothing beat it
        "metric": record["metric"],  # the task metric as the search measured it, on the split scored_on names
        "scored_on": record["scored_on"],
        "metric_mean": record.get("metric_mean"),  # over metric_seeds seeds when confirmed
        "metric_seeds": record.get("metric_seeds", 1),
        "score_name": view.score_name,  # the first objective: what selected the trial
        "score": record["score"],
        "score_mean": record.get("score_mean"),  # over metric_seeds seeds when confirmed: what picked it
        "validation": record.get("validation"),  # retrained on the validation split: the figure to report
        "metric_name": task.metric,
        "metrics": record["metrics"],
        "trainable_fraction": record["trainable_fraction"],
        "head_params": record.get("head_params", info.head_params),
        "sparsity": record.get("sparsity"),
        "method_report": record.get("method_report"),  # what the methods did in training (IncreLoRA's ranks reached)
        "objectives": dict(
            zip(
                view.attrs.get(keys.OBJECTIVES, []),
                trial.values or trial.user_attrs.get(keys.VALUES_AT_STOP, []),
                strict=True,
            )
        ),
        "state": trial.state.name,  # PRUNED: stopped at a rung; its metric is the one at the stop
        "optuna_params": trial.params,
        "budget": spec.what.budget,
        "space": spec.what.space,
    }
    steps = int(trial.user_attrs.get("steps") or 1000)
    if trained is None:
        return write_export(out, chosen.config, info, summary, steps, trial.user_attrs.get("masks_path"))
    kept = retrained_models(view, chosen.key, pick)
    chosen_runs = kept if trained == "all" else [closest_to_mean(kept)]
    written = []
    for run in chosen_runs:
        folder = Path(out) / f"seed-{run['seed']}" if trained == "all" else Path(out)
        source = kept_path(run["model"], RunsDir.at(runs_dir).root)
        if not source.is_dir():
            raise AutopeftError(f"the retrained model {source} is gone: run `autopeft retrain --pick {pick}` again")
        write_export(folder, chosen.config, info, summary, steps)
        written.append(copy_trained(source, folder))
    return written[0]


def retrained_models(view: StudyView, key: int | str, pick: str) -> list[dict[str, Any]]:
    """The retrained runs of a pick that kept their model, at the settings of its latest retrain.

    Args:
        view: the study.
        key: the pick's trial number or ``status_quo``.
        pick: what the user named (for the message).
    """
    runs = [r for r in view.retrains.get(key, []) if r.get("model") and "metric" in r]
    if not runs:
        raise AutopeftError(
            f"no trained model of {pick!r} (trial {key}) is kept: run `autopeft retrain --study {view.name} "
            f"--pick {pick}` first"
        )
    return [r for r in runs if r["settings"] == runs[-1]["settings"]]
