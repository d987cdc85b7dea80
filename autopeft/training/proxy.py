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
from autopeft.methods.build import apply_config, count_trainable, target_sparsity
from autopeft.methods.config import TrialConfig
from autopeft.models import backbone_info, initialise_fresh, load_pretrained
from autopeft.tasks import compute_metrics, get_task
from autopeft.training.data import collate, length_grouped_batches, scored_part, subset, training_and_evaluation


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
        rung_eval_samples: validation examples scored at early-stopping rungs (one fixed subset for
            every trial, so their rung metrics compare; ``None``: all): a rung costs a fraction of
            the final evaluation.
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
    rung_eval_samples: int | None = 256
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
        rungs: fractions of training after which the evaluation metric is measured and ``at_rung`` asked
            whether to go on (early stopping); empty: evaluate only at the end.
        masks_path: where to write the pruning masks (``.npz``), when the configuration prunes.
        rung_score: what ``at_rung`` is given: ``neg_loss`` (minus the loss on the rung's
            evaluation subset), ``metric`` (the task's main metric there) or ``train_loss`` (minus
            the mean task loss of the last :data:`TRAIN_LOSS_WINDOW` of the steps: no evaluation,
            and the rung subset is evaluated only when the trial stops).
        evaluate_on: ``validation`` (train on the whole train split, score on validation: retrain,
            evaluate, baselines) or ``selection`` (a search: score on the selection split, train on
            the rest; the validation split is not read).
        selection_seed: the seed of the held-out selection part (the study's seed).
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
    rung_score: str = "metric"
    evaluate_on: str = "validation"
    selection_seed: int = 0

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


TRAIN_LOSS_WINDOW = 1 / 8
"""The ``train_loss`` rung score averages the task loss of the last ``TRAIN_LOSS_WINDOW`` of the
training's steps (one epoch: batches the model had not seen when they were scored)."""


def train_loss_score(losses: list[float], total_steps: int) -> float:
    """The ``train_loss`` rung score after ``len(losses)`` of ``total_steps`` steps.

    Args:
        losses: the task loss of each step so far.
        total_steps: the training's planned steps (they set the window's length).
    """
    window = max(1, round(TRAIN_LOSS_WINDOW * total_steps))
    return -float(np.mean(losses[-window:]))


RungCallback = Callable[[int, float, float], bool]
"""Called at each rung with (rung index, fraction of training done, rung score); true stops the trial."""


def evaluate(model: torch.nn.Module, split: dict, metrics: list[str], regression: bool, batch_size: int) -> dict:
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
    """
    device = next(model.parameters()).device
    model.eval()
    labels = np.asarray(split["labels"])
    lengths = np.asarray([len(x) for x in split["input_ids"]])
    outputs = np.empty(len(lengths), dtype=np.float32 if regression else np.int64)
    losses = np.empty(len(lengths), dtype=np.float64)
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
    return {**compute_metrics(metrics, outputs, labels), "neg_loss": -float(losses.mean())}


def run_proxy_trial(request: ProxyRequest, at_rung: RungCallback | None = None) -> dict[str, Any]:
    """Train one configuration cheaply and evaluate it (``request.evaluate_on``: selection or validation).

    Args:
        request: what to train and how.
        at_rung: asked after each of ``request.rungs`` whether to stop (early stopping).

    Returns:
        ``metric`` (the task's main metric), ``metrics`` (all of the task's metrics),
        ``trainable_params`` (counted on the built model, head excluded), timings and step counts,
        ``rung_metrics`` (the main metric at each rung evaluated), ``rung_scores`` (what the stop
        decisions compared: ``request.rung_score`` at each rung), ``train_losses`` (the task loss of
        each training step, before regularisers), ``pruned`` (true when
        ``at_rung`` stopped it: ``metric`` is then the last rung's), ``sparsity`` (measured from the
        backbone's encoder-layer Linear weights), ``target_sparsity`` (what the configuration asks)
        and ``masks_path`` (where the pruning masks were written, if any).

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
        request.evaluate_on,
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
    optimizer = adapted.optimizer(config.training["learning_rate"])
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (s + 1) / (warmup + 1) if s < warmup else max(0.0, (total_steps - s) / max(1, total_steps - warmup)),
    )
    dtype = autocast_dtype(device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    rung_steps = {max(1, math.ceil(f * total_steps)): (i, f) for i, f in enumerate(request.rungs)}
    rung_metrics: list[float] = []
    rung_scores: list[float] = []

    rung_dev = dev
    if settings.rung_eval_samples and settings.rung_eval_samples < len(dev["labels"]):
        chosen = np.random.default_rng(0).choice(len(dev["labels"]), settings.rung_eval_samples, replace=False)
        rung_dev = subset(dev, np.sort(chosen))

    def evaluate_dev(split: dict = dev) -> dict[str, float]:
        return evaluate(model, split, list(task.metrics), task.is_regression, settings.eval_batch_size)

    def evaluate_rung() -> float:
        """Evaluate on the rung subset into ``metrics`` and ``rung_metrics``; return the seconds taken."""
        nonlocal metrics
        rung_started = time.perf_counter()
        metrics = evaluate_dev(rung_dev)
        rung_metrics.append(metrics[task.metric])
        return time.perf_counter() - rung_started

    metrics: dict[str, float] = {}
    train_losses: list[float] = []

    for hook in adapted.hooks:
        hook.on_train_begin()
    model.train()
    step, tokens, rung_seconds, pruned = 0, 0, 0.0, False
    train_started = time.perf_counter()
    while step < total_steps and not pruned:
        for indices in length_grouped_batches(lengths, settings.batch_size, rng):
            batch = {k: v.to(device) for k, v in collate(train, indices, task.is_regression).items()}
            with _autocast(device):
                loss = model(**batch).loss
                train_losses.append(float(loss.detach()))  # the task loss, before regularisers
                for term in filter(lambda t: t is not None, (hook.loss_term() for hook in adapted.hooks)):
                    loss = loss + term
            if not torch.isfinite(loss):
                raise TrialFailed(f"non-finite loss ({loss.item()}) at step {step}")
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            step += 1
            for hook in adapted.hooks:
                hook.after_step(step)  # AdaLoRA's allocation and pruning read the gradients
            optimizer.zero_grad(set_to_none=True)
            tokens += int(batch["attention_mask"].sum())
            if step in rung_steps and step < total_steps and at_rung is not None:
                if request.rung_score == "train_loss":  # free; in a first epoch, scored on batches not yet seen
                    rung_scores.append(train_loss_score(train_losses, total_steps))
                else:
                    rung_seconds += evaluate_rung()
                    rung_scores.append(metrics[task.metric if request.rung_score == "metric" else request.rung_score])
                pruned = bool(at_rung(*rung_steps[step], rung_scores[-1]))
                if pruned and request.rung_score == "train_loss":
                    rung_seconds += evaluate_rung()  # the metric it stopped at
                model.train()
            if step >= total_steps or pruned:
                break
    train_seconds = time.perf_counter() - train_started - rung_seconds

    eval_started = time.perf_counter()
    if not pruned:
        metrics = evaluate_dev()
    finished = time.perf_counter()
    eval_seconds = finished - eval_started + rung_seconds
    masks = adapted.masks()
    if masks and request.masks_path:
        save_masks(request.masks_path, masks)
    return {
        "metric": metrics[task.metric],
        "metrics": metrics,
        "trainable_params": actual,
        "steps": step,
        "train_examples": step * settings.batch_size,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "seconds": finished - started,
        "threads": torch.get_num_threads(),
        "train_tokens": tokens,
        "final_loss": float(loss.detach()),
        "rung_metrics": rung_metrics,
        "rung_scores": rung_scores,
        "rung_eval_seconds": rung_seconds,
        "train_losses": [round(x, 5) for x in train_losses],
        "pruned": pruned,
        "sparsity": adapted.sparsity(),
        "target_sparsity": target_sparsity(config, info),
        "masks_path": request.masks_path if masks else None,
        "method_report": {k: v for hook in adapted.hooks for k, v in hook.report().items()},
    }


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
