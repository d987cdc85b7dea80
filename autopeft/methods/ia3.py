"""(IA)^3 (Liu et al., 2022): learnt vectors that rescale activations, the cheapest option, via peft.

On attention and FFN-up modules a vector scales the module's output (``out_features`` parameters);
on the FFN-down module (``ffn_out``) it scales the input, i.e. the FFN's inner activation
(``in_features`` parameters), as in the paper. Vectors start at one: the backbone is unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from autopeft.methods.base import BuildContext, PeftMethod, ValueOf, register_method
from autopeft.methods.lora import check_sites, inject, site_names
from autopeft.methods.placement import PlacedSection
from autopeft.models import MODULE_INPUTS, BackboneInfo
from autopeft.schema import Strict

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

FEEDFORWARD = "ffn_out"
"""The generic module whose input, not output, IA3 scales."""


class Ia3Section(PlacedSection):
    """The ``methods.ia3`` section of a space file."""


class Ia3Plan(Strict):
    """An IA3 configuration: the ``[layer, module]`` sites carrying a scaling vector."""

    targets: list[tuple[int, str]] = Field(min_length=1)


def _width(info: BackboneInfo, layer: int, module: str) -> int:
    site = info.sites[(layer, module)]
    return site.in_features if module == FEEDFORWARD else site.out_features


@register_method
class Ia3(PeftMethod):
    """Rescaling vectors on chosen modules."""

    name = "ia3"
    order = 2
    section = Ia3Section
    plan = Ia3Plan
    example = {"targets": [[0, "key"], [1, "value"], [2, "ffn_out"]]}

    def check(self, section: Ia3Section, info: BackboneInfo) -> str | None:
        return section.check_placement(info)

    def dimensions(self, section: Ia3Section, info: BackboneInfo) -> dict[str, BaseDistribution]:
        return section.placement_dimensions(self.name, info)

    def decode(self, section: Ia3Section, value_of: ValueOf, info: BackboneInfo) -> dict | None:
        targets = section.placed_sites(self.name, value_of, info)
        return {"targets": [list(t) for t in targets]} if targets else None

    def check_plan(self, plan: dict, info: BackboneInfo) -> str | None:
        return super().check_plan(plan, info) or check_sites(plan["targets"], info)

    def kept_activations(self, plan: dict, info: BackboneInfo) -> dict[tuple, int]:
        # the scaled tensor is kept for the vector's gradient: the module's input (feed-forward) or its output
        kept = {}
        for layer, module in plan["targets"]:
            key = ("input", layer, MODULE_INPUTS[module]) if module == FEEDFORWARD else ("output", layer, module)
            kept[key] = _width(info, layer, module)
        return kept

    def count(self, plan: dict, info: BackboneInfo) -> int:
        return sum(_width(info, layer, module) for layer, module in plan["targets"])

    def minimal_count(self, section: Ia3Section, info: BackboneInfo) -> int:
        return min(sum(_width(info, *s) for s in sites) for sites in section.minimal_sites(info))

    def _config(self, plan: dict, info: BackboneInfo, task_type):
        from peft import IA3Config

        names = site_names(plan["targets"], info)
        feedforward = [n for n, (_, m) in zip(names, plan["targets"], strict=True) if m == FEEDFORWARD]
        return IA3Config(task_type=task_type, target_modules=sorted(names), feedforward_modules=sorted(feedforward))

    def peft_config(self, plan: dict, info: BackboneInfo, total_steps: int = 1000):
        from peft import TaskType

        return self._config(plan, info, TaskType.SEQ_CLS)

    def apply(self, model, plan: dict, context: BuildContext) -> None:
        inject(model, self._config(plan, context.info, None), self.name)
