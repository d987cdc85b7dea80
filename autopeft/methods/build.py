"""Apply a configuration's methods to a backbone and count what became trainable."""

from __future__ import annotations

from autopeft.methods.base import METHODS
from autopeft.models import BackboneInfo
from autopeft.space import TrialConfig


def peft_config(config: TrialConfig, info: BackboneInfo):
    """The single ``peft`` configuration that realises ``config``.

    Args:
        config: the configuration.
        info: the backbone.
    """
    if len(config.methods) != 1:
        raise NotImplementedError(f"combining methods {sorted(config.methods)} is not supported yet")
    ((name, plan),) = config.methods.items()
    return METHODS[name].peft_config(plan, info)


def apply_config(model, config: TrialConfig, info: BackboneInfo):
    """Wrap a sequence-classification model with the PEFT modules of ``config`` (head trainable).

    Args:
        model: a ``transformers`` sequence-classification model.
        config: the configuration.
        info: the backbone's description.
    """
    from peft import get_peft_model

    return get_peft_model(model, peft_config(config, info))


def peft_trainable_params(model) -> int:
    """Trainable parameters of a peft model outside the classification head (``modules_to_save``)."""
    return sum(p.numel() for name, p in model.named_parameters() if p.requires_grad and "modules_to_save" not in name)
