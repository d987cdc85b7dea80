"""Low-cost proxy training of one configuration: a short fine-tune, then evaluation (a search's
selection split, or the validation split after the search)."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from autopeft import defaults
from autopeft.attention import use_fast_dropout
from autopeft.errors import TrialFailed
from autopeft.methods.build import AdaptedModel, apply_config, count_trainable, target_sparsity
from autopeft.methods.config import TrialConfig
from autopeft.models import backbone_info, initialise_fresh, load_pretrained
from autopeft.tasks import compute_metrics, get_task
from autopeft.training.data import collate, length_grouped_batches, scored_part, subset, training_and_evaluation
from autopeft.training.memory import (
    GIB,
    MemoryModel,
    MemoryShape,
    cache_key,
    cached,
    calibrate,
    measure_peak,
    parse_shape,
    resident_bytes,
    synthetic_batch,
)


@dataclass(frozen=True)
class ProxySettings:
    """How cheaply each configuration is trained.

    Attributes:
        epochs: passes over the (sub-sampled) training split; fractions allowed.
        max_train_samples: training examples drawn (fixed subset per seed) from the train split.
        max_eval_samples: evaluation examples scored (``None``: the whole evaluation split).
        batch_size: training batch size.
        eval_batch_size: evaluation batch size (no gradients, so larger).
        max_length: truncation length in tokens.
        warmup_ratio: fraction of steps with linear learning-rate warm-up.
        rung_eval_samples: evaluation examples scored at rungs (one fixed subset for every trial, so their
            rung scores compare; ``None``, the default: every example the trial is scored on).
        attention_dropout: keep the backbone's dropout on attention probabilities (the default).
            Without it PyTorch's fused attention kernel runs on CPUs too, 10-25% faster here; whether
            proxies then rank differently is within the noise of ``bench/proxy_fidelity.py``.
    """

    epochs: float = defaults.EPOCHS
    max_train_samples: int | None = defaults.MAX_TRAIN_SAMPLES
    max_eval_samples: int | None = None
    batch_size: int = defaults.BATCH_SIZE
    eval_batch_size: int = 128
    max_length: int = defaults.MAX_LENGTH
    warmup_ratio: float = 0.06
    rung_eval_samples: int | None = None
    attention_dropout: bool = True


def full_fidelity(settings: ProxySettings | None = None, epochs: float = defaults.FULL_EPOCHS) -> ProxySettings:
    """The schedule every full-fidelity training runs: ``epochs`` over the whole train split at
    :data:`~autopeft.defaults.FULL_BATCH_SIZE`, scored on every evaluation example.

    Args:
        settings: what the other fields keep (a study's proxy: its length, dropout; default: the defaults).
        epochs: passes over the train split.
    """
    return replace(
        settings or ProxySettings(),
        epochs=epochs,
        max_train_samples=None,
        max_eval_samples=None,
        batch_size=defaults.FULL_BATCH_SIZE,
    )


@dataclass(frozen=True)
class ProxyRequest:
    """Everything a worker needs to train one configuration (plain data, sent through Ray).

    Attributes:
        model: HF id or folder of the backbone.
        task: task name.
        data_dir: local GLUE folder (``None``: the hub).
        config: the configuration, as :meth:`TrialConfig.to_dict`.
        settings: the proxy settings.
        seed: random seed of this trial.
        threads: torch CPU threads this trial may use.
        cache_dir: tokenisation cache folder.
        rungs: the fraction of the training at which ``at_rung`` is first called (only the first is read
            when a callback decides; :func:`static_rungs` walks them all); empty: evaluate only at the end.
        masks_path: where to write the pruning masks (``.npz``), when the configuration prunes.
        rung_score: what a rung's ``score`` is: ``neg_loss`` (minus the loss on the rung's evaluation
            examples) or ``metric`` (the task's main metric there). Both are in every rung's ``metrics``.
        scored_on: ``validation`` (train on the whole train split, score on validation: retrain,
            evaluate, baselines) or ``selection`` (a search: score on the selection split, train on
            the rest; the validation split is not read).
        selection_seed: the seed of the held-out selection part (the study's seed).
        predictions: return each evaluated example's prediction (``predictions``: label ids or scores,
            and for classification each class's probability) with the final evaluation.
        model_dir: keep the trained model in this folder (:mod:`autopeft.model_folder`'s format), when it ends.
        provenance: what ``autopeft.json``'s ``trained`` block records beside the seed, settings and metrics
            (the study, the trial).
        memory_shape: measure the configuration's peak training memory at this batch shape (``32x128``) before
            training (``measured_memory_gib``; on a copy of the model, so training is unchanged).
    """

    model: str
    task: str
    data_dir: str | None
    config: dict
    settings: ProxySettings
    seed: int = 0
    threads: int = 1
    cache_dir: str | None = None
    rungs: tuple[float, ...] = ()
    masks_path: str | None = None
    rung_score: str = "neg_loss"
    scored_on: str = "validation"
    selection_seed: int = 0
    predictions: bool = False
    model_dir: str | None = None
    provenance: dict | None = None
    memory_shape: str | None = None

    def to_dict(self) -> dict:
        """Plain-dict form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ProxyRequest:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**data, "settings": ProxySettings(**data["settings"]), "rungs": tuple(data.get("rungs", ()))})


_BACKBONES: dict[tuple[str, int, bool], tuple[torch.nn.Module, frozenset[str]]] = {}


def _fresh_backbone(model: str, num_labels: int, attention_dropout: bool, seed: int) -> torch.nn.Module:
    """A copy of the pretrained model whose fresh parameters (the head) are drawn from ``seed``.

    The weights are read from disk once per process; what the checkpoint lacks is initialised
    again for every trial, so a result depends on its seed alone, not on the worker that ran it.
    """
    key = (model, num_labels, attention_dropout)
    if key not in _BACKBONES:
        _BACKBONES[key] = load_pretrained(model, num_labels, attention_dropout=attention_dropout)
    pretrained, fresh = _BACKBONES[key]
    net = copy.deepcopy(pretrained)
    initialise_fresh(net, fresh, seed)
    return net


def _untouched_backbone(model: str, num_labels: int, attention_dropout: bool) -> torch.nn.Module:
    """A copy of the pretrained model as loaded (after :func:`_fresh_backbone` loaded it), for peft's saving."""
    return copy.deepcopy(_BACKBONES[(model, num_labels, attention_dropout)][0])


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision of a device: bf16 where the GPU has it, else fp16 on GPUs, none on CPUs."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _autocast(device: torch.device) -> torch.autocast:
    """The device's mixed-precision context (a no-op on CPUs)."""
    dtype = autocast_dtype(device)
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def training_step(
    model, batch: dict, optimizer, scaler, params: list, hooks=(), step: int = 0
) -> tuple[float, torch.Tensor]:
    """One optimiser step as every training runs it: forward (mixed precision on GPUs), the hooks' regularisers,
    backward, gradient clipping at norm 1, the optimiser's step. Gradients stay for the hooks.

    Args:
        model: the model, exactly its trained parameters requiring gradients.
        batch: the batch, on the model's device.
        optimizer: its optimiser.
        scaler: the gradient scaler (a no-op without float16).
        params: the trained parameters (their gradients are clipped).
        hooks: the methods' training hooks (their loss terms).
        step: steps done so far (for the message).

    Returns:
        The task loss (before regularisers) and the loss that was back-propagated.

    Raises:
        TrialFailed: the loss is not finite.
    """
    device = next(model.parameters()).device
    with _autocast(device):
        loss = model(**batch).loss
        task_loss = float(loss.detach())
        for term in filter(lambda t: t is not None, (hook.loss_term() for hook in hooks)):
            loss = loss + term
    if not torch.isfinite(loss):
        raise TrialFailed(f"non-finite loss ({loss.item()}) at step {step}")
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    scaler.step(optimizer)
    scaler.update()
    return task_loss, loss


RungCallback = Callable[[dict[str, Any]], float | None]
"""Called at each rung with its record (``rung``, ``fraction``, ``step``, ``metrics``, ``score``); returns the
fraction of the training to report at next (1.0: train to the end), or ``None`` to stop here."""


def static_rungs(fractions: tuple[float, ...]) -> RungCallback:
    """A rung callback that never stops: it reports at each of ``fractions`` in turn (snapshots of one run).

    Args:
        fractions: increasing fractions of the training, below 1.
    """

    def next_fraction(record: dict[str, Any]) -> float:
        later = [f for f in fractions if f > record["fraction"]]
        return later[0] if later else 1.0

    return next_fraction


def rung_score(metrics: dict[str, float], task_metric: str, name: str) -> float:
    """What rungs rank on, read from an evaluation's ``metrics``: ``name`` is ``metric`` (the task's main
    metric, ``task_metric``) or a key of ``metrics`` (``neg_loss``)."""
    return float(metrics[task_metric if name == "metric" else name])


def rung_step(fraction: float, total_steps: int) -> int:
    """The optimiser step at which a rung at ``fraction`` of a ``total_steps`` training is scored."""
    return min(total_steps, max(1, math.ceil(fraction * total_steps - 1e-9)))


def evaluate(
    model: torch.nn.Module,
    split: dict,
    metrics: list[str],
    regression: bool,
    batch_size: int,
    predictions: bool = False,
) -> dict:
    """Metrics of ``model`` on a tokenised split, without gradients, and ``neg_loss``.

    ``neg_loss`` is minus the mean dev loss (cross-entropy, or squared error for regression): a
    smooth score that still ranks models whose thresholded metric is tied (all predicting the
    majority class, as short trainings often do).

    Args:
        model: the model.
        split: a tokenised split.
        metrics: metric names.
        regression: whether the task is a regression.
        batch_size: examples per forward pass.
        predictions: also return ``predictions``: each example's predicted label id (or score) and, for
            classification, ``probabilities`` (one row per example), in the split's order.
    """
    device = next(model.parameters()).device
    model.eval()
    labels = np.asarray(split["labels"])
    lengths = np.asarray([len(x) for x in split["input_ids"]])
    outputs = np.empty(len(lengths), dtype=np.float32 if regression else np.int64)
    losses = np.empty(len(lengths), dtype=np.float64)
    probabilities = None
    with torch.inference_mode(), _autocast(device):
        for indices in length_grouped_batches(lengths, batch_size, None):
            batch = {k: v.to(device) for k, v in collate(split, indices, regression).items()}
            gold = batch.pop("labels")
            logits = model(**batch).logits.float()
            if regression:
                scores = logits.squeeze(-1)
                outputs[indices] = scores.cpu().numpy()
                losses[indices] = ((scores - gold) ** 2).cpu().numpy()
            else:
                outputs[indices] = logits.argmax(-1).cpu().numpy()
                losses[indices] = torch.nn.functional.cross_entropy(logits, gold, reduction="none").cpu().numpy()
                if predictions:
                    if probabilities is None:
                        probabilities = np.empty((len(lengths), logits.shape[-1]), dtype=np.float32)
                    probabilities[indices] = torch.softmax(logits, -1).cpu().numpy()
    result = {**compute_metrics(metrics, outputs, labels), "neg_loss": -float(losses.mean())}
    if predictions:
        result["predictions"] = {"labels": labels.tolist(), "predicted": outputs.tolist()}
        if probabilities is not None:
            result["predictions"]["probabilities"] = probabilities.round(6).tolist()
    return result


def run_proxy_trial(request: ProxyRequest, at_rung: RungCallback | None = None) -> dict[str, Any]:
    """Train one configuration and evaluate it (``request.scored_on``: selection or validation).

    The learning-rate schedule (and every method's schedule) runs over the whole training's steps; a rung
    is a snapshot of that one run: training pauses, the evaluation examples are scored, ``at_rung`` says
    where to report next or to stop, and training continues where it was (same weights, optimiser
    state, schedule and data order: scoring draws no random numbers).

    Args:
        request: what to train and how.
        at_rung: called at each rung, from ``request.rungs[0]`` on (successive halving); ``None``: no rung.

    Returns:
        ``metric`` (the task's main metric), ``metrics`` (all of the task's metrics and ``neg_loss``),
        ``trainable_params`` (counted on the built model, head excluded), timings and step counts,
        ``total_steps`` (the whole training's), ``rungs`` (each rung's record: ``rung``, ``fraction`` (as
        asked), ``step`` (where it was scored), ``metric``, ``metrics``, ``score``), ``rung_scores`` and
        ``rung_metrics`` (the same, by rung),
        ``train_losses`` (the task loss of each training step, before regularisers), ``pruned`` (true when
        ``at_rung`` stopped it: ``metric`` is then the last rung's), ``sparsity`` (measured from the
        backbone's encoder-layer Linear weights), ``target_sparsity`` (what the configuration asks),
        ``masks_path`` (where the pruning masks were written, if any) and, when asked, ``predictions``.

    Raises:
        TrialFailed: the loss became NaN/inf, or the built model's count differs from the prediction.
    """
    torch.set_num_threads(max(1, int(request.threads)))
    torch.manual_seed(request.seed)
    rng = np.random.default_rng(request.seed)
    task = get_task(request.task)
    settings = request.settings
    config = TrialConfig.from_dict(request.config)
    info = backbone_info(request.model, task.num_labels)
    started = time.perf_counter()

    train, dev = training_and_evaluation(
        task,
        request.scored_on,
        request.model,
        settings.max_length,
        request.data_dir,
        request.cache_dir,
        request.selection_seed,
    )
    n_train = len(train["labels"])
    if settings.max_train_samples and settings.max_train_samples < n_train:
        train = subset(
            train, np.random.default_rng(request.seed).choice(n_train, settings.max_train_samples, replace=False)
        )
    dev = scored_part(dev, settings.max_eval_samples)

    lengths = np.asarray([len(x) for x in train["input_ids"]])
    steps_per_epoch = math.ceil(len(lengths) / settings.batch_size)
    total_steps = max(1, math.ceil(settings.epochs * steps_per_epoch))
    warmup = int(settings.warmup_ratio * total_steps)

    device = _device()
    backbone = _fresh_backbone(request.model, task.num_labels, settings.attention_dropout, request.seed)
    torch.manual_seed(request.seed)  # the PEFT modules' initialisation and the dropout masks: from the seed alone
    adapted = apply_config(backbone, config, info, total_steps)
    model = adapted.model.to(device)
    use_fast_dropout(model)  # same dropout, cheaper masks on CPUs
    predicted, actual = count_trainable(config, info), adapted.trainable_params()
    if predicted != actual:
        raise TrialFailed(f"trainable count mismatch: predicted {predicted}, built model has {actual}")
    params = [p for p in model.parameters() if p.requires_grad]
    measured_memory = None
    if request.memory_shape:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # training draws unchanged
            measured_memory = measure_adapted(adapted, task.num_labels, parse_shape(request.memory_shape)) / GIB
    optimizer = adapted.optimizer(config.training["learning_rate"])
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (s + 1) / (warmup + 1) if s < warmup else max(0.0, (total_steps - s) / max(1, total_steps - warmup)),
    )
    dtype = autocast_dtype(device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    rung_dev = dev
    if settings.rung_eval_samples and settings.rung_eval_samples < len(dev["labels"]):
        chosen = np.random.default_rng(0).choice(len(dev["labels"]), settings.rung_eval_samples, replace=False)
        rung_dev = subset(dev, np.sort(chosen))

    def scored_on(split: dict, predictions: bool = False) -> dict[str, float]:
        scores = evaluate(
            model, split, list(task.metrics), task.is_regression, settings.eval_batch_size, predictions=predictions
        )
        if "neg_loss" in scores and not math.isfinite(scores["neg_loss"]):  # a diverged model: nothing to rank
            raise TrialFailed(f"non-finite loss ({-scores['neg_loss']}) on the scored examples at step {step}")
        return scores

    rungs: list[dict[str, Any]] = []
    next_fraction = request.rungs[0] if request.rungs and at_rung is not None else 1.0
    next_step = rung_step(next_fraction, total_steps)
    metrics: dict[str, Any] = {}
    train_losses: list[float] = []

    for hook in adapted.hooks:
        hook.on_train_begin()
    model.train()
    step, tokens, rung_seconds, pruned = 0, 0, 0.0, False
    train_started = time.perf_counter()
    while step < total_steps and not pruned:
        for indices in length_grouped_batches(lengths, settings.batch_size, rng):
            batch = {k: v.to(device) for k, v in collate(train, indices, task.is_regression).items()}
            task_loss, loss = training_step(model, batch, optimizer, scaler, params, adapted.hooks, step)
            train_losses.append(task_loss)  # the task loss, before regularisers
            schedule.step()
            step += 1
            for hook in adapted.hooks:
                hook.after_step(step)  # AdaLoRA's allocation and pruning read the gradients
            optimizer.zero_grad(set_to_none=True)
            tokens += int(batch["attention_mask"].sum())
            if step == next_step and step < total_steps:
                rung_started = time.perf_counter()
                metrics = scored_on(rung_dev)
                score = rung_score(metrics, task.metric, request.rung_score)
                record = {"rung": len(rungs), "fraction": next_fraction, "step": step, "metric": metrics[task.metric]}
                record["metrics"] = metrics
                rungs.append({**record, "score": score})
                rung_seconds += time.perf_counter() - rung_started
                decided = at_rung(rungs[-1])
                if decided is None:
                    pruned = True
                else:
                    next_fraction, next_step = decided, max(step + 1, rung_step(decided, total_steps))
                model.train()
            if step >= total_steps or pruned:
                break
    train_seconds = time.perf_counter() - train_started - rung_seconds

    eval_started = time.perf_counter()
    if not pruned:
        metrics = scored_on(dev, request.predictions)
    finished = time.perf_counter()
    eval_seconds = finished - eval_started + rung_seconds
    predictions = metrics.pop("predictions", None)
    masks = adapted.masks()
    if masks and request.masks_path:
        save_masks(request.masks_path, masks)
    if request.model_dir and not pruned:
        from autopeft.model_folder import save_trained

        trained = {"seed": request.seed, "scored_on": request.scored_on, "metric": metrics[task.metric]}
        trained |= {"metrics": metrics, "steps": step, "settings": asdict(settings), **(request.provenance or {})}
        trained["method_report"] = {k: v for hook in adapted.hooks for k, v in hook.report().items()}
        record = {"task": request.task, "task_name": task.name, "label_names": list(task.class_names)}
        record["text_fields"] = list(task.text_fields)
        record |= {"metric_name": task.metric, "trained": trained}
        fresh = _untouched_backbone(request.model, task.num_labels, settings.attention_dropout)
        kept_masks = request.masks_path if masks else None
        save_trained(request.model_dir, adapted, info, record, total_steps, kept_masks, fresh)
    result = {
        "metric": metrics[task.metric],
        "metrics": metrics,
        "trainable_params": actual,
        "steps": step,
        "total_steps": total_steps,
        "train_examples": step * settings.batch_size,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "seconds": finished - started,
        "threads": torch.get_num_threads(),
        "train_tokens": tokens,
        "final_loss": float(loss.detach()),
        "rungs": rungs,
        "rung_metrics": [r["metrics"][task.metric] for r in rungs],
        "rung_scores": [r["score"] for r in rungs],
        "rung_eval_seconds": rung_seconds,
        "train_losses": [round(x, 5) for x in train_losses],
        "pruned": pruned,
        "sparsity": adapted.sparsity(),
        "target_sparsity": target_sparsity(config, info),
        "masks_path": request.masks_path if masks else None,
        "method_report": {k: v for hook in adapted.hooks for k, v in hook.report().items()},
    }
    if measured_memory is not None:
        result["measured_memory_gib"] = measured_memory
    if predictions is not None:
        result["predictions"] = predictions
    return result


def measure_memory(
    model: str, num_labels: int, settings: ProxySettings, config: TrialConfig | None, shape: MemoryShape
) -> int:
    """Peak training memory of a configuration at a batch shape, measured on this process's device
    (:func:`autopeft.training.memory.measure_peak`), on a fresh copy of the backbone trained as a trial trains.

    Args:
        model: the backbone's id or folder.
        num_labels: the head's outputs (1: regression).
        settings: the training settings (attention dropout).
        config: the configuration; ``None``: only the classification head trains.
        shape: the batch shape.
    """
    info = backbone_info(model, num_labels)
    net = _fresh_backbone(model, num_labels, settings.attention_dropout, 0)
    if config is None:
        head = {n for n, _ in net.named_parameters() if not n.startswith(f"{net.base_model_prefix}.")}
        for name, p in net.named_parameters():
            p.requires_grad_(name in head)
        adapted = AdaptedModel(net)
    else:
        adapted = apply_config(net, config, info, total_steps=1000)
    return measure_adapted(adapted, num_labels, shape)


def measure_adapted(adapted: AdaptedModel, num_labels: int, shape: MemoryShape) -> int:
    """Peak training memory of an adapted model at a batch shape (on a copy: the model is untouched).

    Args:
        adapted: the model with its configuration applied.
        num_labels: the head's outputs (1: regression).
        shape: the batch shape.
    """
    device = _device()
    use_fast_dropout(adapted.model)
    lr = adapted.config.training["learning_rate"] if adapted.config else 1e-4
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype(device) == torch.float16)

    def make_optimizer(model):
        return AdaptedModel(model, config=adapted.config).optimizer(lr)

    def step(model, batch, optimizer):
        training_step(model, batch, optimizer, scaler, [p for p in model.parameters() if p.requires_grad])
        optimizer.zero_grad(set_to_none=True)

    vocab = adapted.model.config.vocab_size
    batch = synthetic_batch(shape, vocab, num_labels == 1, device)
    return measure_peak(adapted.model, make_optimizer, step, batch, device)


def memory_model(
    model: str, num_labels: int, settings: ProxySettings, shape: MemoryShape, cache_dir: str | None
) -> MemoryModel:
    """The backbone's calibrated memory model at a batch shape on this process's device, cached in ``cache_dir``
    (:func:`autopeft.training.memory.calibrate`; about ten measured steps the first time).

    Args:
        model: the backbone's id or folder.
        num_labels: the head's outputs (1: regression).
        settings: the training settings (attention dropout).
        shape: the batch shape.
        cache_dir: the calibration cache (``None``: calibrate every time).
    """
    device = _device()
    info = backbone_info(model, num_labels)
    facts = {"labels": num_labels, "attention_dropout": settings.attention_dropout, "torch": torch.__version__}

    def build():
        resident = resident_bytes(_fresh_backbone(model, num_labels, settings.attention_dropout, 0))

        def measure(config):
            return measure_memory(model, num_labels, settings, config, shape)

        return calibrate(measure, resident, info, shape, device.type, 2 if autocast_dtype(device) else 4)

    return cached(cache_dir, cache_key(model, shape, device.type, facts), build)


def save_masks(path: str, masks: dict[str, np.ndarray]) -> None:
    """Write pruning masks (True: kept) as a compressed ``.npz``, atomically.

    Args:
        path: the file (its folder is created).
        masks: parameter path relative to the backbone -> boolean mask.
    """
    import os
    import tempfile

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".npz")
    with os.fdopen(fd, "wb") as handle:
        np.savez_compressed(handle, **masks)
    os.replace(tmp, path)
