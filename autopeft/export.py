"""Export a chosen trial as a configuration ``peft`` loads as is, plus autopeft's own record of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna

from autopeft.methods.build import peft_config
from autopeft.models import backbone_info
from autopeft.pareto import pick_trial
from autopeft.study import spec_of, trial_config, trial_record
from autopeft.tasks import get_task


def export_trial(study: optuna.Study, pick: str, out: str | Path) -> dict[str, Any]:
    """Write ``adapter_config.json`` (for ``peft.PeftConfig.from_pretrained``) and ``autopeft.json``.

    ``autopeft.json`` holds the full configuration, the objectives and the provenance: ``model``,
    ``task``, ``study``, ``trial``, ``trainable_params`` (PEFT modules only, head excluded), ``metric``.

    Args:
        study: the study.
        pick: ``knee``, ``best`` or a trial number (see :func:`autopeft.pareto.pick_trial`).
        out: the output folder (created).

    Returns:
        The content of ``autopeft.json``.
    """
    trial = pick_trial(study, pick)
    spec = spec_of(study)
    task = get_task(spec["task"])
    info = backbone_info(spec["model"], task.num_labels, spec.get("trust_remote_code", False))
    config = trial_config(trial)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    peft_cfg = peft_config(config, info)
    peft_cfg.base_model_name_or_path = spec["model"]
    peft_cfg.save_pretrained(str(out))
    record = trial_record(trial)
    summary = {
        "model": spec["model"],
        "task": task.name,
        "study": study.study_name,
        "trial": trial.number,
        "pick": pick,
        "metric": record["metric"],
        "metric_name": task.metric,
        "metrics": record["metrics"],
        "trainable_params": record["trainable_params"],
        "trainable_fraction": record["trainable_fraction"],
        "head_params": record["head_params"],
        "backbone_params": info.backbone_params,
        "objectives": dict(
            zip(
                study.user_attrs.get("autopeft.objectives", []),
                trial.values or trial.user_attrs.get("values_at_stop", []),
                strict=True,
            )
        ),
        "state": trial.state.name,  # PRUNED: stopped early; its metric is the one at the stop
        "config": config.to_dict(),
        "optuna_params": trial.params,
        "budget": spec["budget"],
        "space": spec["space"],
        "peft_expressible": True,
    }
    (out / "autopeft.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
