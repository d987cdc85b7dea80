"""Full fine-tuning: every backbone weight trains. The reference point of baselines, not a PEFT method.

It adds no module and no dimension; its count is the backbone's whole parameter count. A space may
list it (``full_finetune: {}``), but no budget below 100% admits it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from autopeft.methods.base import BuildContext, MethodSection, PeftMethod, ValueOf, register_method
from autopeft.models import MODULE_INPUTS, BackboneInfo
from autopeft.schema import Strict

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution


class FullSection(MethodSection):
    """The ``methods.full_finetune`` section of a space file (nothing to choose)."""


class FullPlan(Strict):
    """Full fine-tuning has no options."""


@register_method
class FullFinetune(PeftMethod):
    """Train every parameter of the backbone."""

    name = "full_finetune"
    not_in_peft = "full fine-tuning trains every backbone weight: save the trained model itself"
    order = 15  # after every module-adding method, so their parameters are inside the backbone too
    section = FullSection
    plan = FullPlan
    example: dict = {}
    trains_backbone = True

    def check(self, section: FullSection, info: BackboneInfo) -> str | None:
        return None

    def dimensions(self, section: FullSection, info: BackboneInfo) -> dict[str, BaseDistribution]:
        return {}

    def decode(self, section: FullSection, value_of: ValueOf, info: BackboneInfo) -> dict | None:
        return {}

    def gradient_sites(self, plan: dict, info: BackboneInfo) -> list[tuple[int, str]]:
        return [(-1, "embeddings")]

    def kept_activations(self, plan: dict, info: BackboneInfo) -> dict[tuple, int]:
        # every Linear's weight trains: each keeps its input
        return {
            ("input", layer, MODULE_INPUTS[module]): info.sites[(layer, module)].in_features
            for layer, module in info.sites
        }

    def count(self, plan: dict, info: BackboneInfo) -> int:
        return info.backbone_params

    def minimal_count(self, section: FullSection, info: BackboneInfo) -> int:
        return info.backbone_params

    def apply(self, model: torch.nn.Module, plan: dict, context: BuildContext) -> None:
        return None

    def trained_parameters(self, model: torch.nn.Module, created: list[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
        return list(model.base_model.parameters())
