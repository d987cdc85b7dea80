"""Export a configuration as files ``peft`` and autopeft load, and rebuild a model from them.

An export folder holds:

- ``autopeft.json``: the full configuration (every method's plan, the learning rate), its
  objectives and provenance, and ``peft_expressible`` with, when false, ``not_expressible``: which
  part peft cannot express (bottleneck adapters, per-layer prefix lengths, pruning masks, a
  combination of methods);
- ``adapter_config.json`` when the whole configuration is one method peft implements in that form
  (``peft.PeftConfig.from_pretrained`` loads it); also ``peft/<method>/adapter_config.json`` for
  each peft-expressible part of a combination;
- ``masks.npz`` when the configuration prunes: the masks the trial measured its sparsity with.

:func:`load` rebuilds the exact model (methods, hooks, masks) from such a folder on a backbone.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopeft import keys
from autopeft.errors import ConfigError
from autopeft.methods.base import METHODS
from autopeft.methods.build import (
    AdaptedModel,
    apply_config,
    check_config,
    count_trainable,
    peft_config,
    target_sparsity,
    writes_masks,
)
from autopeft.methods.config import EXPORT_FILE, TrialConfig, read_config
from autopeft.models import BackboneInfo, backbone_info, public_model_id, resolve_backbone

if TYPE_CHECKING:
    from autopeft.study import StudyView

MASKS_FILE = "masks.npz"


def write_export(
    out: str | Path,
    config: TrialConfig,
    info: BackboneInfo,
    record: dict[str, Any],
    total_steps: int = 1000,
    masks_path: str | None = None,
) -> dict[str, Any]:
    """Write an export folder for ``config`` on a backbone.

    Args:
        out: the folder (created).
        config: the configuration.
        info: the backbone.
        record: fields written into ``autopeft.json`` beside the configuration (provenance, metrics).
        total_steps: training steps the configuration was trained for (AdaLoRA's schedule).
        masks_path: the pruning masks of the trained configuration, copied as ``masks.npz``.

    Returns:
        The content of ``autopeft.json``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    whole = peft_config(config, info, total_steps)
    model_id = public_model_id(info.model)  # what adapter_config.json names: loadable on another machine
    reasons = []
    if whole is None:
        if len(config.methods) > 1:
            reasons.append(f"one adapter_config.json holds one method; this combines {', '.join(config.methods)}")
        for name, plan in config.methods.items():
            part = peft_config(TrialConfig({name: plan}, config.training), info, total_steps)
            if part is None:
                reasons.append(f"{name}: {METHODS[name].not_in_peft}")
            else:
                part.base_model_name_or_path = model_id or info.model
                part.save_pretrained(str(out / "peft" / name))
    else:
        whole.base_model_name_or_path = model_id or info.model
        whole.save_pretrained(str(out))
    if masks_path and Path(masks_path).is_file():
        if Path(masks_path).resolve() != (out / MASKS_FILE).resolve():
            shutil.copyfile(masks_path, out / MASKS_FILE)
    elif writes_masks(config):
        reasons.append("pruning masks were not found: load() applies none")
    summary = {
        **record,
        "model": model_id or info.model,  # the public id where the backbone has one
        "model_path": info.model,  # the folder or id the study trained on, here
        "trainable_params": count_trainable(config, info),
        "backbone_params": info.backbone_params,
        "target_sparsity": target_sparsity(config, info),
        "config": config.to_dict(),
        "total_steps": total_steps,
        "peft_expressible": whole is not None,
        "not_expressible": reasons,
        "loader": "autopeft.load(folder, model)",
    }
    (out / EXPORT_FILE).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def export_trial(view: StudyView, pick: str, out: str | Path) -> dict[str, Any]:
    """Export what a pick answers (see the module docstring for what is written): a trial, or, when ``best``
    found nothing that beat it, the status quo with that verdict.

    Args:
        view: the study.
        pick: ``knee``, ``best`` or a trial number (see :meth:`autopeft.study.StudyView.pick`).
        out: the output folder (created).

    Returns:
        The content of ``autopeft.json``.
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
    return write_export(out, chosen.config, info, summary, steps, trial.user_attrs.get("masks_path"))


def load(path: str | Path, model=None, trust_remote_code: bool = False) -> AdaptedModel:
    """Rebuild the exact model of an export: every method inserted, pruning masks applied.

    Args:
        path: an export folder (or its ``autopeft.json``).
        model: a ``transformers`` sequence-classification model of the export's backbone; default:
            load the backbone named in ``autopeft.json`` with the task's number of labels.
        trust_remote_code: allow the backbone's own code when loading it here.

    Returns:
        The adapted model (``.model`` is the ``torch`` module; ``.sparsity()`` the measured sparsity).
    """
    import numpy as np

    from autopeft.methods.build import apply_masks
    from autopeft.models import load_model
    from autopeft.tasks import get_task

    config, document = read_config(path)
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    if model is None:
        if "model" not in document or "task" not in document:
            raise ConfigError(f"{folder}: {EXPORT_FILE} names no model/task; pass the model to load()")
        source = resolve_backbone(document.get("model_path") or document["model"], document["model"])
        model = load_model(source, get_task(document["task"]).num_labels, trust_remote_code)
    name = model.config._name_or_path or document.get("model", "")
    info = backbone_info(name, model.config.num_labels, trust_remote_code)
    config = check_config(config, info, source=str(folder / EXPORT_FILE))
    adapted = apply_config(model, config, info, int(document.get("total_steps", 1000)))
    masks_file = folder / MASKS_FILE
    if masks_file.is_file():
        with np.load(masks_file) as masks:
            apply_masks(model.base_model, {key: masks[key] for key in masks.files}, info)
    return adapted
