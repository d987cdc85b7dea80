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
    """

    model: torch.nn.Module
    hooks: list[TrainingHook] = field(default_factory=list)
    linears: dict[tuple[int, str], torch.nn.Linear] = field(default_factory=dict)
    head: list[str] = field(default_factory=list)

    def trainable_params(self) -> int:
        """Trainable parameters outside the classification head."""
        head = set(self.head)
        return sum(p.numel() for n, p in self.model.named_parameters() if p.requires_grad and n not in head)

    def sparsity(self) -> float:
        """Measured fraction of exactly-zero weights over the encoder-layer Linear matrices."""
        from autopeft.methods.pruning import measured_sparsity

        return measured_sparsity(self.linears)

    def masks(self) -> dict[str, np.ndarray]:
        """Pruning masks (True: kept) by parameter path relative to the backbone; empty without pruning."""
        from autopeft.methods.pruning import Pruner

        return {k: v for hook in self.hooks if isinstance(hook, Pruner) for k, v in hook.mask_arrays().items()}


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
    for name, method in METHODS.items():  # registry order is application order
        if name not in config.methods:
            continue
        before = {id(p) for p in model.parameters()}
        hook = method.apply(model, config.methods[name], context)
        created = [p for p in model.parameters() if id(p) not in before]
        trainable |= {id(p) for p in method.trained_parameters(model, created)}
        if hook is not None:
            context.hooks.append(hook)
    head_names = set(head)
    head_ids = {id(p) for n, p in model.named_parameters() if n in head_names}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable or id(p) in head_ids)
    return AdaptedModel(model=model, hooks=context.hooks, linears=context.linears, head=head)


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
