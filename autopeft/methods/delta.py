"""What autopeft's own weight-update methods share: placement on ``[layer, module]`` sites with scalar knobs, and
an update ``delta(x)`` added to a frozen Linear's output by a forward hook.

The hook is a bound method of the update's module (not a closure), so a deep copy of the model (the memory
measurement's) calls its own copy of the update.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from autopeft.methods.base import PeftMethod, ValueOf
from autopeft.methods.lora import check_sites
from autopeft.methods.placement import PlacedSection
from autopeft.models import MODULE_INPUTS, BackboneInfo
from autopeft.schema import all_numbers, distribution, numbers

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution


class SiteUpdate(torch.nn.Module):
    """A module whose :meth:`delta` is added to the output of the frozen Linear it is attached to."""

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """The update of the Linear's output for its input ``x``."""
        raise NotImplementedError

    def add_to_output(self, module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        """The forward hook: the Linear's output plus :meth:`delta` of its input."""
        return output + self.delta(args[0])


def attach(model: torch.nn.Module, info: BackboneInfo, name: str, site: tuple[int, str], update: SiteUpdate) -> None:
    """Keep ``update`` in the backbone (``autopeft_<name>.<layer>_<module>``) and hook it on the site's module.

    Args:
        model: the sequence-classification model.
        info: the backbone.
        name: the method's name.
        site: ``(layer, generic module)``.
        update: the update.
    """
    backbone = model.base_model
    holder = f"autopeft_{name}"
    if not hasattr(backbone, holder):
        backbone.add_module(holder, torch.nn.ModuleDict())
    getattr(backbone, holder)[f"{site[0]}_{site[1]}"] = update
    backbone.get_submodule(info.sites[site].name).register_forward_hook(update.add_to_output)


class PlacedKnobsMethod(PeftMethod):
    """A method placed on ``[layer, module]`` sites (a :class:`PlacedSection`) with scalar knobs, each fixed or
    searched: its plan is ``targets`` plus one value per knob.

    Attributes:
        knobs: knob name -> ``(cast, check)``; ``check(values)`` gives a problem with the knob's values or ``None``.
    """

    knobs: ClassVar[dict[str, tuple[Callable[[Any], Any], Callable[[list], str | None]]]]
    not_in_peft = "not a peft method: it loads through autopeft.load"

    def check(self, section: PlacedSection, info: BackboneInfo) -> str | None:
        problem = section.check_placement(info)
        for key, (cast, check) in self.knobs.items():
            spec = getattr(section, key)
            if problem:
                break
            if cast is not str and not all_numbers(spec):
                problem = f"{key}: numbers are expected, got {numbers(spec)}"
            else:
                problem = check(numbers(spec))
                problem = f"{key}: {problem}" if problem else None
        return problem

    def dimensions(self, section: PlacedSection, info: BackboneInfo) -> dict[str, BaseDistribution]:
        dims = section.placement_dimensions(self.name, info)
        for key in self.knobs:
            dist = distribution(getattr(section, key))
            if dist is not None:
                dims[f"{self.name}.{key}"] = dist
        return dims

    def decode(self, section: PlacedSection, value_of: ValueOf, info: BackboneInfo) -> dict | None:
        targets = section.placed_sites(self.name, value_of, info)
        if not targets:
            return None
        knobs = {
            key: cast(value_of(f"{self.name}.{key}", getattr(section, key))) for key, (cast, _) in self.knobs.items()
        }
        return {"targets": [list(t) for t in targets], **knobs}

    def check_plan(self, plan: dict, info: BackboneInfo) -> str | None:
        return super().check_plan(plan, info) or check_sites(plan["targets"], info)

    def minimal_count(self, section: PlacedSection, info: BackboneInfo) -> int:
        least = {
            key: cast(min(numbers(getattr(section, key)))) for key, (cast, _) in self.knobs.items() if cast is not str
        }
        return min(
            self.count({"targets": [list(s) for s in sites], **least}, info) for sites in section.minimal_sites(info)
        )

    def kept_activations(self, plan: dict, info: BackboneInfo) -> dict[tuple, int]:
        # the update's gradient needs the site's input (kept once per layer and tensor read)
        return {
            ("input", layer, MODULE_INPUTS[module]): info.sites[(layer, module)].in_features
            for layer, module in plan["targets"]
        }


def at_least(low: float) -> Callable[[list], str | None]:
    """A knob check: every value at least ``low``."""
    return lambda values: None if min(values) >= low else f"values of at least {low:g} are expected, got {values}"


def within(low: float, high: float) -> Callable[[list], str | None]:
    """A knob check: every value in ``(low, high]``."""
    return lambda values: (
        None
        if low < min(values) and max(values) <= high
        else f"values in ({low:g}, {high:g}] are expected, got {values}"
    )


def positive(values: list) -> str | None:
    """A knob check: every value positive."""
    return None if min(values) > 0 else f"positive values are expected, got {values}"
