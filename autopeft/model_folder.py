"""The folder format of a configuration, trained or not: what ``export``, ``evaluate --out`` and ``retrain`` write,
and what :func:`load`, ``peft`` and ``autopeft predict`` read.

A folder holds:

- ``autopeft.json``: the full configuration (every method's plan, the learning rate), its objectives and
  provenance, the task and its label names, the backbone (its public id and the path it was trained on, which is
  also the tokenizer's), and ``peft_expressible`` with, when false, ``not_expressible``: which part peft cannot
  express (bottleneck adapters, per-layer prefix lengths, pruning masks, a combination of methods);
- ``adapter_config.json`` when the whole configuration is one method peft implements in that form
  (``peft.PeftConfig.from_pretrained`` loads it); also ``peft/<method>/adapter_config.json`` for each
  peft-expressible part of a combination;
- ``masks.npz`` when the configuration prunes: the masks the run measured its sparsity with.

A *trained* folder (``trained`` in ``autopeft.json``: seed, settings, validation metric) also holds its weights,
in safetensors only (nothing is pickled):

- ``autopeft_model.safetensors``: every tensor the methods created and the classification head, by their names
  in the adapted model; :func:`load` restores them for any configuration;
- ``adapter_model.safetensors`` beside ``adapter_config.json`` when peft expresses the configuration: then
  ``PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, num_labels=k), folder)``
  gives the same model (the head is saved as peft's ``modules_to_save``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

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

MASKS_FILE = "masks.npz"
WEIGHTS_FILE = "autopeft_model.safetensors"
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"
TRAINED_FILES = (WEIGHTS_FILE, PEFT_WEIGHTS_FILE, MASKS_FILE)
"""The files a trained folder adds to a configuration's export (copied by :func:`copy_trained`)."""


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


def save_trained(
    out: str | Path,
    adapted: AdaptedModel,
    info: BackboneInfo,
    record: dict[str, Any],
    total_steps: int,
    masks_path: str | None = None,
    fresh_model: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Write a trained model's folder: the configuration's export and its weights (see the module docstring).

    Args:
        out: the folder (created; an earlier one is replaced whole, so a folder is never half old).
        adapted: the trained model (its configuration is ``adapted.config``).
        info: the backbone.
        record: fields written into ``autopeft.json`` (the task, label names, ``trained``: seed, settings, metric).
        total_steps: the steps it was trained for.
        masks_path: its pruning masks, when it prunes.
        fresh_model: an untouched copy of the backbone's sequence-classification model; with it, a configuration
            peft expresses also gets peft's ``adapter_model.safetensors``.

    Returns:
        The content of ``autopeft.json``.
    """
    from safetensors.torch import save_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        summary = write_export(staging, adapted.config, info, record, total_steps, masks_path)
        save_file(adapted.trained_state(), str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
        if summary["peft_expressible"] and fresh_model is not None:
            summary["peft_weights"] = save_peft_weights(staging, adapted, info, fresh_model, total_steps)
            if not summary["peft_weights"]:
                summary["not_expressible"].append(f"{PEFT_WEIGHTS_FILE}: a trained tensor has no place in peft's model")
            (staging / EXPORT_FILE).write_text(json.dumps(summary, indent=2, default=str) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.replace(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


def save_peft_weights(
    out: Path, adapted: AdaptedModel, info: BackboneInfo, fresh_model: torch.nn.Module, total_steps: int
) -> bool:
    """Write peft's ``adapter_model.safetensors`` of a trained one-method model, by peft's own saving: a ``PeftModel``
    on an untouched backbone takes the trained tensors (the method's adapter is peft's ``default`` adapter, the head
    its ``modules_to_save``), then saves.

    Args:
        out: the folder (its ``adapter_config.json`` is already written).
        adapted: the trained model.
        info: the backbone.
        fresh_model: an untouched copy of the backbone's sequence-classification model.
        total_steps: the steps it was trained for (AdaLoRA's schedule).

    Returns:
        Whether peft's file was written: false when a trained tensor of either model has no place in the other (said
        in ``not_expressible``).
    """
    from peft import get_peft_model

    ((method, _),) = adapted.config.methods.items()
    wrapped = get_peft_model(fresh_model, peft_config(adapted.config, info, total_steps))
    ours = adapted.model.state_dict()
    state, mapped = {}, set()
    for name, param in wrapped.named_parameters():  # every tensor peft trains: a prompt encoder's too
        if not param.requires_grad:
            continue
        inner = name.removeprefix("base_model.model.")
        if ".modules_to_save.default." in inner:  # the head
            own = inner.replace(".modules_to_save.default.", ".")
        else:  # the adapter's tensors: peft names it "default", autopeft by its method
            own = ".".join(method if part == "default" else part for part in inner.split("."))
        if own not in ours or ours[own].shape != param.shape:
            return False
        state[name] = ours[own].detach().to(param.device, param.dtype)
        mapped.add(own)
    if {n for n, p in adapted.model.named_parameters() if p.requires_grad} - mapped:
        return False  # autopeft trained a tensor peft's model does not hold
    wrapped.load_state_dict(state, strict=False)
    with tempfile.TemporaryDirectory() as scratch:
        wrapped.save_pretrained(scratch, safe_serialization=True)
        shutil.copyfile(Path(scratch) / PEFT_WEIGHTS_FILE, out / PEFT_WEIGHTS_FILE)
    return True


def copy_trained(source: str | Path, out: str | Path, record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Give an export folder the weights of a trained folder of the same configuration (``export --trained``,
    ``evaluate --out``): its weight and mask files, and its ``trained`` provenance in ``autopeft.json``.

    Args:
        source: the trained folder.
        out: the export folder (already written).
        record: further fields for ``autopeft.json``.

    Returns:
        The content of ``autopeft.json``.
    """
    source, out = Path(source), Path(out)
    trained = json.loads((source / EXPORT_FILE).read_text())
    document = json.loads((out / EXPORT_FILE).read_text())
    if trained["config"] != document["config"]:
        raise ConfigError(f"{source} holds another configuration than {out}")
    for name in TRAINED_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
    keep = ("trained", "peft_weights", "label_names", "text_fields", "total_steps")
    document.update({k: trained[k] for k in keep if k in trained}, **(record or {}))
    (out / EXPORT_FILE).write_text(json.dumps(document, indent=2, default=str) + "\n")
    return document


def load(path: str | Path, model=None, trust_remote_code: bool = False) -> AdaptedModel:
    """Rebuild the exact model of an export: every method inserted, pruning masks applied, and a trained folder's
    weights restored (the same logits as the model that was trained).

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
    weights = folder / WEIGHTS_FILE
    if weights.is_file():
        restore_weights(adapted, weights)
    return adapted


def restore_weights(adapted: AdaptedModel, path: Path) -> None:
    """Put a trained folder's tensors into a freshly adapted model of its configuration.

    Raises:
        ConfigError: the file and the model disagree (a tensor missing on either side, or of another shape).
    """
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    expected = adapted.saved_names()
    state = adapted.model.state_dict()
    odd = sorted(set(tensors) ^ expected) or [n for n in tensors if tensors[n].shape != state[n].shape]
    if odd:
        raise ConfigError(f"{path}: its tensors do not fit the configuration's model (first: {odd[0]})")
    adapted.model.load_state_dict(tensors, strict=False)
