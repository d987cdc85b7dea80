"""Apply a configuration's methods to a backbone, make exactly their modules trainable, and count them.

Methods are applied in registry order (``peft`` tuners first, wrapping the backbone's own Linear
modules; then autopeft's adapters and prefixes; pruning last). After all of them, exactly the
parameters each method created trainable, plus the classification head, are trainable: every
other parameter is frozen, whatever an individual injection did to its neighbours' flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from autopeft.errors import ConfigError
from autopeft.methods.base import METHODS, BuildContext, TrainingHook
from autopeft.methods.config import TrialConfig
from autopeft.models import BackboneInfo


@dataclass
class AdaptedModel:
    """A model with a configuration's methods applied.

    Attributes:
        model: the sequence-classification model (call it as usual).
        hooks: the methods' training hooks (AdaLoRA's allocation, pruning), in application order.
        linears: the backbone's encoder-layer Linear modules (sparsity is measured over them).
        head: names of the classification head's parameters (trainable, not counted).
        created: names (in ``model.state_dict()``) of every parameter and buffer the methods created, trained
            or not: with the head, what a trained model adds to its backbone (:meth:`trained_state`).
    """

    model: torch.nn.Module
    hooks: list[TrainingHook] = field(default_factory=list)
    linears: dict[tuple[int, str], torch.nn.Linear] = field(default_factory=dict)
    head: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)

    def trainable_params(self) -> int:
        """Trainable parameters outside the classification head."""
        head = set(self.head)
        return sum(p.numel() for n, p in self.model.named_parameters() if p.requires_grad and n not in head)

    config: TrialConfig | None = None

    def saved_names(self) -> set[str]:
        """What training may change besides pruning: the tensors the methods created (:attr:`created`), the head, and
        any other trained parameter (full fine-tuning's backbone), by their names in ``model.state_dict()``."""
        trained = {name for name, p in self.model.named_parameters() if p.requires_grad}
        return set(self.created) | set(self.head) | trained

    def trained_state(self) -> dict[str, torch.Tensor]:
        """The tensors of :meth:`saved_names`, on the CPU, each its own copy (VeRA's projections are one tensor shared
        by every layer; safetensors stores no shared memory, and loading fills each name again)."""
        state = self.model.state_dict()
        return {name: state[name].detach().to("cpu", copy=True).contiguous() for name in sorted(self.saved_names())}

    def sparsity(self) -> float:
        """Measured fraction of exactly-zero weights over the encoder-layer Linear matrices."""
        return measured_sparsity(self.linears)

    def masks(self) -> dict[str, np.ndarray]:
        """Keep-masks (True: kept) the methods wrote into frozen weights, by parameter path relative to the backbone."""
        return {k: v for hook in self.hooks for k, v in hook.mask_arrays().items()}

    def optimizer(self, lr: float) -> torch.optim.Optimizer:
        """The optimizer of the trained parameters: a method's own (LoRA+) where one asks for it, else AdamW.

        Args:
            lr: the configuration's learning rate.
        """
        for name, plan in (self.config.methods if self.config else {}).items():
            own = METHODS[name].optimizer(plan, self.model, lr)
            if own is not None:
                return own
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)


def measured_sparsity(linears: dict[tuple[int, str], torch.nn.Linear]) -> float:
    """Fraction of exactly-zero weights over the given Linear matrices.

    Args:
        linears: the backbone's encoder-layer Linear modules.
    """
    zeros = sum(int((m.weight == 0).sum()) for m in linears.values())
    return zeros / sum(m.weight.numel() for m in linears.values())


def apply_masks(backbone: torch.nn.Module, masks: dict[str, np.ndarray], info: BackboneInfo) -> None:
    """Zero the masked weights of a backbone (as a loaded export reproduces its sparsity).

    Args:
        backbone: ``model.base_model``.
        masks: parameter path relative to the backbone (as written before any method wrapped it)
            -> boolean keep-mask.
        info: the backbone.
    """
    by_name = {s.name: site for site, s in info.sites.items()}
    with torch.no_grad():
        for key, mask in masks.items():
            path, kind = key.rsplit(".", 1)
            module = backbone.get_submodule(path)
            module = module.get_base_layer() if hasattr(module, "get_base_layer") else module
            if path not in by_name:
                raise KeyError(f"mask {key!r} names no encoder Linear")
            tensor = getattr(module, kind)
            tensor.mul_(torch.as_tensor(mask, device=tensor.device).to(tensor.dtype))


def writes_masks(config: TrialConfig) -> bool:
    """Whether training ``config`` writes keep-masks into the frozen weights (a method declares it)."""
    import autopeft.methods  # noqa: F401  (registers the built-in methods)

    return any(METHODS[name].writes_masks for name in config.methods)


def describe(config: dict | None) -> str:
    """A short human description of a configuration (``lora L0,2 query+value r2-8; lr 1.2e-03``), each method's own.

    Args:
        config: a configuration's dict form (``TrialConfig.to_dict()``).
    """
    import autopeft.methods  # noqa: F401  (registers the built-in methods)

    if not config:
        return ""
    parts = [METHODS[name].describe(plan) if name in METHODS else name for name, plan in config["methods"].items()]
    return "; ".join([*parts, f"lr {config['training']['learning_rate']:.1e}"])


def conflicting_pairs(names) -> list[tuple[str, str]]:
    """Pairs of the named methods that cannot share a model (declared by either method).

    Args:
        names: method names (a space's sections).
    """
    import autopeft.methods  # noqa: F401  (registers the built-in methods)

    names = [n for n in METHODS if n in set(names)]
    return [
        (a, b)
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if b in METHODS[a].conflicts or a in METHODS[b].conflicts
    ]


def backbone_linears(model: torch.nn.Module, info: BackboneInfo) -> dict[tuple[int, str], torch.nn.Linear]:
    """``(layer, generic module) -> nn.Linear`` of a backbone as loaded (before any method wraps them).

    Args:
        model: a ``transformers`` sequence-classification model.
        info: its description.
    """
    return {site: model.base_model.get_submodule(s.name) for site, s in info.sites.items()}


def check_config(config: TrialConfig, info: BackboneInfo, source: str = "--config") -> TrialConfig:
    """Validate a configuration written by hand: known methods, valid plans for this backbone.

    Args:
        config: the configuration.
        info: the backbone.
        source: where it came from (for the message).

    Returns:
        The configuration with every plan's omitted keys at their defaults.

    Raises:
        ConfigError: the first problem, as ``<source>: methods.<name>.<key>: <problem>``.
    """
    import autopeft.methods  # noqa: F401  (registers the built-in methods)

    for name, plan in config.methods.items():
        if name not in METHODS:
            raise ConfigError(f"{source}: methods.{name}: unknown method; allowed: {', '.join(METHODS)}")
        if not isinstance(plan, dict):
            raise ConfigError(f"{source}: methods.{name}: expected a mapping")
        problem = METHODS[name].check_plan(plan, info)
        if problem:
            raise ConfigError(f"{source}: methods.{name}.{problem}")
    if not any(METHODS[name].adds_modules for name in config.methods):
        raise ConfigError(
            f"{source}: methods: name at least one method that adds modules; allowed: {', '.join(METHODS)}"
        )
    lr = config.training.get("learning_rate")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr <= 0:
        raise ConfigError(f"{source}: training.learning_rate: a positive number is required, got {lr!r}")
    plans = {
        name: METHODS[name].plan.model_validate(plan).model_dump(mode="json") for name, plan in config.methods.items()
    }
    return TrialConfig(methods=plans, training={**config.training, "learning_rate": float(lr)})


def apply_config(model: torch.nn.Module, config: TrialConfig, info: BackboneInfo, total_steps: int = 1) -> AdaptedModel:
    """Apply every method of ``config`` to a sequence-classification model, in place.

    Args:
        model: a ``transformers`` sequence-classification model (its backbone is ``model.base_model``).
        config: the configuration.
        info: the backbone's description.
        total_steps: optimiser steps the training will run (AdaLoRA and pruning schedules).
    """
    import autopeft.methods  # noqa: F401  (registers the built-in methods)

    prefix = model.base_model_prefix
    head = [n for n, _ in model.named_parameters() if not n.startswith(f"{prefix}.")]
    context = BuildContext(info=info, linears=backbone_linears(model, info), total_steps=total_steps)
    trainable: set[int] = set()
    existing = {id(t) for t in model.state_dict(keep_vars=True).values()}
    for name, method in METHODS.items():  # registry order is application order
        if name not in config.methods:
            continue
        before = {id(p) for p in model.parameters()}
        hook = method.apply(model, config.methods[name], context)
        created = [p for p in model.parameters() if id(p) not in before]
        trainable |= {id(p) for p in method.trained_parameters(model, created)}
        if hook is not None:
            context.hooks.append(hook)
    new = [n for n, t in model.state_dict(keep_vars=True).items() if id(t) not in existing]
    head_names = set(head)
    head_ids = {id(p) for n, p in model.named_parameters() if n in head_names}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable or id(p) in head_ids)
    return AdaptedModel(
        model=model, hooks=context.hooks, linears=context.linears, head=head, config=config, created=new
    )


def peft_config(config: TrialConfig, info: BackboneInfo, total_steps: int = 1000):
    """The single ``peft`` configuration that realises ``config``, or ``None`` when peft cannot.

    A configuration is expressible when it uses exactly one method and that method is one peft
    implements in this form (LoRA, AdaLoRA, IA3; prefix tuning with one length in every layer).

    Args:
        config: the configuration.
        info: the backbone.
        total_steps: training steps (AdaLoRA's schedule).
    """
    import autopeft.methods  # noqa: F401  (registers the built-in methods)

    if len(config.methods) != 1:
        return None
    ((name, plan),) = config.methods.items()
    return METHODS[name].peft_config(plan, info, total_steps)


def peft_trainable_params(model) -> int:
    """Trainable parameters of a ``peft.PeftModel`` outside the classification head (``modules_to_save``)."""
    return sum(p.numel() for name, p in model.named_parameters() if p.requires_grad and "modules_to_save" not in name)


def count_trainable(config: TrialConfig, info: BackboneInfo) -> int:
    """Exact trainable PEFT parameters of a configuration on a backbone (head excluded).

    Args:
        config: the configuration.
        info: the backbone.
    """
    import autopeft.methods  # noqa: F401  (registers the built-in methods)

    return sum(METHODS[name].count(plan, info) for name, plan in config.methods.items())


def target_sparsity(config: TrialConfig, info: BackboneInfo) -> float:
    """Fraction of the backbone's encoder-layer Linear weights a configuration prunes (exact, before training).

    Args:
        config: the configuration.
        info: the backbone.
    """
    import autopeft.methods  # noqa: F401  (registers the built-in methods)

    return sum(METHODS[name].target_sparsity(plan, info) for name, plan in config.methods.items())
