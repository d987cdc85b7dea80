"""Peak training memory: measured on a training step, and predicted from a configuration before training.

**What is measured.** The peak of live tensor memory during one optimiser step at a stated batch shape
(batch size x padded length), on a copy of the trial's adapted model whose optimiser already holds its
state (the second step): what stays resident (every parameter and buffer, the optimiser's state) plus the
step's own peak (activations kept for the backward pass, gradients, temporaries). On a GPU the step's peak
is ``torch.cuda.max_memory_allocated`` above what was allocated when it began. On a CPU there is no such
counter, and a process's resident size only grows (the allocator keeps freed pages, and Ray reuses
workers), so :class:`LiveTensorBytes` counts it: a ``TorchDispatchMode`` sees every tensor every operator
returns, in the forward and the backward pass, adds its storage's bytes when it first appears, and
subtracts them when the storage is freed (a weak reference's callback). That is the allocator's view of
tensors, without its caching.

**What is predicted** (:class:`MemoryModel`), from what a training step keeps:

- resident: the backbone's parameters and buffers, plus 4 bytes per new parameter, plus 12 bytes per
  trained parameter (its gradient and AdamW's two moments, float32);
- the backward pass's depth: autograd keeps a layer's activations only where the gradient must pass. The
  gradient enters the backbone at the lowest site any method trains (a method's
  :meth:`~autopeft.methods.base.PeftMethod.gradient_sites`); from there, a whole layer costs ``layer``
  bytes, and the part of the entry layer above module ``m`` costs ``entry[m]``;
- the methods' own kept tensors (:meth:`~autopeft.methods.base.PeftMethod.kept_activations`: LoRA keeps
  its input and its rank-``r`` intermediate, per token), a tensor read by several sites counted once;
- ``base``: what every step keeps whatever trains (the head, the loss, temporaries).

``base``, ``layer`` and ``entry`` are calibrated once per backbone, batch shape and device by
:func:`calibrate`: a step with only the head trained, a rank-1 LoRA probe on each module of the top layer,
and one on the first module of the lowest layer (the probes' own kept tensors are taken out). The result
is cached in the runs folder, like the tokenisation.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from autopeft.errors import AutopeftError
from autopeft.methods.base import METHODS
from autopeft.methods.build import check_config
from autopeft.methods.config import TrialConfig
from autopeft.models import BackboneInfo

GIB = 2**30
OPTIMISER_BYTES_PER_PARAM = 8
"""What each trained parameter keeps besides itself: AdamW's two moments, float32. Its gradient is not counted:
the peak comes early in the backward pass, before the gradients have grown (full fine-tuning's included)."""
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20}
_UNITS |= {"g": GIB, "gb": GIB, "gib": GIB, "t": 2**40, "tb": 2**40, "tib": 2**40}


@dataclass(frozen=True)
class MemoryShape:
    """The batch a memory figure is stated for: ``batch`` sequences of ``length`` tokens (padded)."""

    batch: int
    length: int

    @property
    def tokens(self) -> int:
        """Tokens in the batch."""
        return self.batch * self.length

    def __str__(self) -> str:
        return f"{self.batch}x{self.length}"


def parse_shape(text: str) -> MemoryShape:
    """A batch shape from ``32x256`` (batch size x padded length).

    Args:
        text: the option's value.
    """
    match = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", str(text))
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise AutopeftError(f"--memory-shape {text!r}: expected BATCHxLENGTH with positive numbers, such as 32x256")
    return MemoryShape(int(match[1]), int(match[2]))


def parse_memory(text: str) -> int:
    """Bytes from ``6GiB``, ``512MiB``, ``1.5g`` (binary units; a bare number is bytes).

    Args:
        text: the option's value.
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match[2].lower() if match else ""
    if not match or unit not in _UNITS or float(match[1]) <= 0:
        raise AutopeftError(f"--memory-budget {text!r}: expected a positive size such as 6GiB or 512MiB")
    return int(float(match[1]) * _UNITS[unit])


# -- measuring ------------------------------------------------------------------------------------------------


class LiveTensorBytes(TorchDispatchMode):
    """Counts the bytes of tensor storages created inside it and still alive, and their peak.

    Every operator's outputs pass through :meth:`__torch_dispatch__`; a storage seen for the first time adds
    its size, and a weak reference subtracts it when the storage is freed. Views share their base's storage
    and are counted once. Tensors that existed before the mode was entered are not counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, tuple[weakref.ref, int]] = {}
        self.current = 0
        self.peak = 0

    def _freed(self, key: int, ref: weakref.ref) -> None:
        entry = self._live.get(key)
        if entry is not None and entry[0] is ref:
            del self._live[key]
            self.current -= entry[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if size == 0 or key in self._live:
                continue
            ref = weakref.ref(storage, lambda r, k=key: self._freed(k, r))
            self._live[key] = (ref, size)
            self.current += size
            self.peak = max(self.peak, self.current)
        return out


def resident_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Bytes of the distinct storages of a model's parameters and buffers and an optimiser's state.

    Args:
        model: the model.
        optimizer: its optimiser (its state tensors count).
    """
    tensors = [*model.parameters(), *model.buffers()]
    if optimizer is not None:
        tensors += [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def synthetic_batch(shape: MemoryShape, vocab_size: int, regression: bool, device: torch.device) -> dict:
    """A training batch of the stated shape: random token ids, no padding, labels of the task's kind.

    Args:
        shape: batch size and length.
        vocab_size: the tokenizer's vocabulary (ids are drawn from its upper part, away from special tokens).
        regression: float labels (one output) instead of class ids.
        device: where the batch lives.
    """
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(vocab_size // 2, vocab_size, (shape.batch, shape.length), generator=generator)
    labels = torch.zeros(shape.batch, dtype=torch.float if regression else torch.long)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    return {k: v.to(device) for k, v in batch.items()}


def measure_peak(model: torch.nn.Module, make_optimizer, step, batch: dict, device: torch.device) -> int:
    """Peak training memory of a model on one batch: resident bytes plus the peak of its second optimiser step.

    Works on a copy, so the model and its training are untouched.

    Args:
        model: the model, exactly its trained parameters requiring gradients.
        make_optimizer: ``model -> optimizer``, as training builds it.
        step: ``(model, batch, optimizer) -> None``: one training step as training runs it.
        batch: the batch (:func:`synthetic_batch`).
        device: where it trains.
    """
    twin = copy.deepcopy(model).to(device)
    twin.train()
    optimizer = make_optimizer(twin)
    step(twin, batch, optimizer)  # the optimiser's state now exists, as in every later step
    resident = resident_bytes(twin, optimizer)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step(twin, batch, optimizer)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
    else:
        with LiveTensorBytes() as tracker:
            step(twin, batch, optimizer)
        peak = tracker.peak
    del twin, optimizer
    return resident + peak


# -- predicting -----------------------------------------------------------------------------------------------


def kept_elements(config: TrialConfig, info: BackboneInfo) -> int:
    """Elements per token the configuration's own modules keep for the backward pass (a tensor read by several
    sites, or kept by several methods, counted once).

    Args:
        config: the configuration.
        info: the backbone.
    """
    kept: dict[tuple, int] = {}
    for name, plan in config.methods.items():
        kept.update(METHODS[name].kept_activations(plan, info))
    return sum(kept.values())


def gradient_entry(config: TrialConfig, info: BackboneInfo) -> tuple[int, str] | None:
    """Where the gradient enters the backbone: the lowest ``(layer, module)`` any method trains (layer ``-1``: the
    embeddings), or ``None`` when no gradient passes through it.

    Args:
        config: the configuration.
        info: the backbone.
    """
    order = {m: i for i, m in enumerate(info.modules)}
    sites = [s for name, plan in config.methods.items() for s in METHODS[name].gradient_sites(plan, info)]
    return min(sites, key=lambda s: (s[0], order.get(s[1], -1)), default=None)


@dataclass(frozen=True)
class MemoryModel:
    """The calibrated prediction of a backbone's peak training memory at one batch shape on one device.

    Attributes:
        shape: the batch shape.
        device: ``cpu`` or ``cuda`` (and its precision: activations under autocast are half the bytes).
        resident: bytes of the backbone's parameters and buffers, head included.
        base: what the backbone keeps when the gradient enters at the top layer's first module.
        layer: bytes a whole layer keeps when the gradient passes through it.
        entry: by module: what the entry layer keeps beyond ``base`` when the gradient enters at that module
            (0 for the first module; less above it).
        activation_bytes: bytes per kept element (4 in float32, 2 under autocast).
        num_layers: the backbone's layers.
    """

    shape: MemoryShape
    device: str
    resident: int
    base: int
    layer: int
    entry: dict[str, int]
    activation_bytes: int
    num_layers: int

    def depth_bytes(self, entry: tuple[int, str] | None) -> int:
        """What the backbone keeps, beyond :attr:`base`, for a gradient entering at ``entry``.

        Args:
            entry: from :func:`gradient_entry` (``None``: no gradient enters; counted as the top layer's last module).
        """
        if entry is None:
            return min(self.entry.values())
        layer, module = entry
        if layer < 0:  # the embeddings: every layer whole
            return self.layer * self.num_layers
        return self.entry.get(module, 0) + self.layer * (self.num_layers - 1 - layer)

    def dependent(self, config: TrialConfig, info: BackboneInfo, trainable: int) -> int:
        """Bytes that depend on the configuration: its parameters' optimiser memory, the backbone's kept layers,
        its modules' kept tensors (what :meth:`predict` adds to the shared part).

        Args:
            config: the configuration.
            info: the backbone.
            trainable: its trainable parameters (head excluded; :func:`~autopeft.methods.build.count_trainable`).
        """
        methods = config.methods.items()
        created = sum(METHODS[name].count(plan, info) for name, plan in methods if not METHODS[name].trains_backbone)
        optimiser = trainable * OPTIMISER_BYTES_PER_PARAM + created * 4
        kept = kept_elements(config, info) * self.shape.tokens * self.activation_bytes
        return optimiser + self.depth_bytes(gradient_entry(config, info)) + kept

    def shared(self, info: BackboneInfo) -> int:
        """Bytes every configuration needs: the backbone, the head and its optimiser state, ``base``.

        Args:
            info: the backbone.
        """
        return self.resident + info.head_params * OPTIMISER_BYTES_PER_PARAM + self.base

    def predict(self, config: TrialConfig, info: BackboneInfo, trainable: int) -> int:
        """Predicted peak training memory of a configuration, in bytes.

        Args:
            config: the configuration.
            info: the backbone.
            trainable: its trainable parameters (head excluded).
        """
        return self.shared(info) + self.dependent(config, info, trainable)

    def upper_bound(self, info: BackboneInfo) -> int:
        """More than any configuration of this backbone can need: every layer kept, every Linear's input kept, and
        optimiser memory for as many new parameters as the backbone has.

        Args:
            info: the backbone.
        """
        inputs = sum(site.in_features for site in info.sites.values()) * self.shape.tokens * self.activation_bytes
        optimiser = info.backbone_params * (4 + OPTIMISER_BYTES_PER_PARAM)
        return self.shared(info) + self.layer * self.num_layers + max(self.entry.values()) + inputs + optimiser

    def to_dict(self) -> dict:
        """JSON-able form (cached, and stored with a study)."""
        return {**asdict(self), "shape": str(self.shape)}

    @classmethod
    def from_dict(cls, data: dict) -> MemoryModel:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**data, "shape": parse_shape(data["shape"])})


@dataclass
class Calibration:
    """What :func:`calibrate` measured (kept for the bench and the tests).

    Attributes:
        model: the calibrated model.
        measured: probe name -> measured peak bytes.
    """

    model: MemoryModel
    measured: dict[str, int] = field(default_factory=dict)


PROBE_RANK = 1
"""The rank of the LoRA probes that calibrate the depth terms (their own kept tensors are subtracted)."""


def probe_config(layer: int, module: str) -> TrialConfig:
    """The calibration probe: a rank-:data:`PROBE_RANK` LoRA on one site.

    Args:
        layer: the site's layer.
        module: its generic module.
    """
    return TrialConfig({"lora": {"targets": [[layer, module, PROBE_RANK]]}}, {"learning_rate": 1e-4})


def calibrate(
    measure, resident: int, info: BackboneInfo, shape: MemoryShape, device: str, activation_bytes: int
) -> Calibration:
    """Calibrate a :class:`MemoryModel` with rank-1 LoRA probes: one on each module of the top layer, and one on
    the first module of the lowest layer. Each probe's own part (its parameters' optimiser memory, its kept
    tensors) is taken out, so what remains is the backbone's.

    Args:
        measure: ``config -> peak bytes``, the training's own step.
        resident: bytes of the backbone's parameters and buffers, head included.
        info: the backbone.
        shape: the batch shape.
        device: the device's name.
        activation_bytes: bytes per kept element.
    """
    top, first = info.num_layers - 1, info.modules[0]
    measured = {f"top.{m}": measure(check_config(probe_config(top, m), info)) for m in info.modules}
    bottom = check_config(probe_config(0, first), info) if info.num_layers > 1 else None
    measured["bottom"] = measure(bottom) if bottom is not None else measured[f"top.{first}"]

    def backbone_part(module: str) -> int:
        config = probe_config(top, module)
        site = info.sites[(top, module)]
        own = PROBE_RANK * (site.in_features + site.out_features) * OPTIMISER_BYTES_PER_PARAM
        own += kept_elements(config, info) * shape.tokens * activation_bytes
        return measured[f"top.{module}"] - resident - info.head_params * OPTIMISER_BYTES_PER_PARAM - own

    base = backbone_part(first)
    entry = {m: backbone_part(m) - base for m in info.modules}
    layer = max(0, (measured["bottom"] - measured[f"top.{first}"]) // max(1, info.num_layers - 1))
    model = MemoryModel(shape, device, resident, base, layer, entry, activation_bytes, info.num_layers)
    return Calibration(model, measured)


def cache_key(model: str, shape: MemoryShape, device: str, settings: dict[str, Any]) -> str:
    """The calibration cache's file name for a backbone, shape, device and training settings.

    Args:
        model: the backbone's id or folder.
        shape: the batch shape.
        device: the device.
        settings: what else changes the memory (attention dropout, the torch version).
    """
    text = json.dumps({"model": str(model), "shape": str(shape), "device": device, **settings}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16] + ".json"


def cached(folder: str | Path | None, key: str, build) -> MemoryModel:
    """The cached calibration under ``key``, or ``build()``'s, written atomically.

    Args:
        folder: the cache folder (``None``: no cache).
        key: from :func:`cache_key`.
        build: ``() -> Calibration``.
    """
    path = Path(folder) / key if folder else None
    if path is not None and path.is_file():
        return MemoryModel.from_dict(json.loads(path.read_text()))
    model = build().model
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_suffix(f".{os.getpid()}.tmp")
        staged.write_text(json.dumps(model.to_dict(), indent=1))
        os.replace(staged, path)
    return model
