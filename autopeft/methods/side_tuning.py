"""Side tuning (LST, Sung et al., 2022): a small side network fed by the backbone's hidden states; the backbone
runs without gradients.

The side network has width ``w``. At each chosen layer ``i`` (in order) it reads the layer's output ``h_i``,
detached, through a ladder down-projection and refines its state with a residual block:
``s = s + down_i(h_i)`` (the first: ``s = down_i(h_i)``), then ``s = s + mlp_i(norm_i(s))`` (``mlp``: Linear
``w x w`` and GELU). Its output ``up(s)`` (``up``: ``w -> hidden``, zero at first) is added to the last layer's
output, which the head reads. Nothing in the backbone requires a gradient, so autograd keeps none of its
activations: the memory of the backward pass is the side network's own (LST's claim; ``bench/memory.py`` and the
methods table measure it). ``up`` starts at zero, so the model is unchanged at initialisation.

Count: per chosen layer ``hidden*w + w`` (down) ``+ 2w`` (norm) ``+ w*w + w`` (mlp), plus ``w*hidden + hidden``
(up).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch
from pydantic import Field, PositiveInt

from autopeft.methods.base import BuildContext, MethodSection, PeftMethod, ValueOf, register_method
from autopeft.methods.placement import Layers, check_layers, layer_switch, on_off
from autopeft.models import MODULE_MAPS, BackboneInfo
from autopeft.schema import Strict, ValueSpec, all_numbers, distribution, numbers

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution


class SideSection(MethodSection):
    """The ``methods.side_tuning`` section of a space file."""

    layers: Layers = Field("searched", description="layers feeding the side network: 'searched', 'all', or indices")
    width: ValueSpec = Field(48, description="the side network's width (LST: the hidden size over 8)")


class SidePlan(Strict):
    """A side-tuning configuration: the feeding ``layers`` and the ``width``."""

    layers: list[int] = Field(min_length=1)
    width: PositiveInt = 48


def layer_path(info: BackboneInfo, layer: int) -> str:
    """The path (relative to the backbone) of transformer layer ``layer``: ``encoder.layer.3``."""
    name = info.sites[(layer, info.modules[0])].name
    return re.search(MODULE_MAPS[info.model_type]["layers"], name).group(0)


def side_count(layers: int, width: int, hidden: int) -> int:
    """Trainable parameters of a side network fed by ``layers`` layers."""
    per_layer = hidden * width + width + 2 * width + width * width + width
    return layers * per_layer + width * hidden + hidden


class Rung(torch.nn.Module):
    """One ladder rung: reads a layer's output into the side state and refines it."""

    def __init__(self, hidden: int, width: int, network: SideNetwork) -> None:
        super().__init__()
        self.down = torch.nn.Linear(hidden, width)
        self.norm = torch.nn.LayerNorm(width)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.GELU())
        self.network = [network]  # not a submodule: the network owns the rung

    def read(self, module: torch.nn.Module, args: tuple, output) -> None:
        """Forward hook on a backbone layer: feed its (detached) output to the side state."""
        hidden = (output[0] if isinstance(output, tuple) else output).detach()
        (network,) = self.network
        fed = self.down(hidden.to(self.down.weight.dtype))
        state = fed if self is network.rungs[0] else network.state + fed
        network.state = state + self.mlp(self.norm(state))


class SideNetwork(torch.nn.Module):
    """The ladder of rungs and the up-projection added to the last layer's output."""

    def __init__(self, hidden: int, width: int, layers: int) -> None:
        super().__init__()
        self.rungs = torch.nn.ModuleList(Rung(hidden, width, self) for _ in range(layers))
        self.up = torch.nn.Linear(width, hidden)
        torch.nn.init.zeros_(self.up.weight)
        torch.nn.init.zeros_(self.up.bias)
        self.state: torch.Tensor | None = None

    def write(self, module: torch.nn.Module, args: tuple, output):
        """Forward hook on the last layer: its output plus the side network's."""
        if isinstance(output, tuple):
            return (output[0] + self.up(self.state).to(output[0].dtype), *output[1:])
        return output + self.up(self.state).to(output.dtype)


@register_method
class SideTuning(PeftMethod):
    """A side network beside a gradient-free backbone."""

    name = "side_tuning"
    order = 14
    section = SideSection
    plan = SidePlan
    example = {"layers": [0, 2], "width": 8}
    identity_at_init = True
    not_in_peft = "side tuning is not a peft method: it loads through autopeft.load"

    def check(self, section: SideSection, info: BackboneInfo) -> str | None:
        problem = check_layers(section.layers, info)
        if not problem and (not all_numbers(section.width) or min(numbers(section.width)) < 1):
            problem = f"width: positive whole numbers are expected, got {numbers(section.width)}"
        return problem

    def _candidates(self, section: SideSection, info: BackboneInfo) -> list[int]:
        return list(range(info.num_layers)) if isinstance(section.layers, str) else list(section.layers)

    def dimensions(self, section: SideSection, info: BackboneInfo) -> dict[str, BaseDistribution]:
        dims = {}
        if section.layers == "searched":
            dims = {layer_switch(self.name, i): on_off() for i in range(info.num_layers)}
        dist = distribution(section.width)
        if dist is not None:
            dims[f"{self.name}.width"] = dist
        return dims

    def decode(self, section: SideSection, value_of: ValueOf, info: BackboneInfo) -> dict | None:
        layers = [i for i in self._candidates(section, info) if value_of(layer_switch(self.name, i), True)]
        if not layers:
            return None
        return {"layers": layers, "width": int(value_of(f"{self.name}.width", section.width))}

    def check_plan(self, plan: dict, info: BackboneInfo) -> str | None:
        problem = super().check_plan(plan, info)
        if not problem and not all(0 <= i < info.num_layers for i in plan["layers"]):
            problem = f"layers: the model has layers 0..{info.num_layers - 1}, got {plan['layers']}"
        return problem

    def count(self, plan: dict, info: BackboneInfo) -> int:
        return side_count(len(plan["layers"]), plan["width"], info.hidden_size)

    def minimal_count(self, section: SideSection, info: BackboneInfo) -> int:
        layers = 1 if section.layers == "searched" else len(self._candidates(section, info))
        return side_count(layers, int(min(numbers(section.width))), info.hidden_size)

    def gradient_sites(self, plan: dict, info: BackboneInfo) -> list[tuple[int, str]]:
        return []  # the backbone keeps nothing for the backward pass

    def kept_activations(self, plan: dict, info: BackboneInfo) -> dict[tuple, int]:
        width = plan["width"]
        kept = {("side_rung", i): info.hidden_size + 4 * width for i in plan["layers"]}
        return kept | {("side_out",): width}

    def describe(self, plan: dict) -> str:
        return f"{self.name} L{','.join(map(str, plan['layers']))} w{plan['width']}"

    def apply(self, model, plan: dict, context: BuildContext) -> None:
        info, backbone = context.info, model.base_model
        layers = sorted(plan["layers"])
        network = SideNetwork(info.hidden_size, plan["width"], len(layers))
        backbone.add_module("autopeft_side_tuning", network)
        for rung, layer in zip(network.rungs, layers, strict=True):
            backbone.get_submodule(layer_path(info, layer)).register_forward_hook(rung.read)
        backbone.get_submodule(layer_path(info, info.num_layers - 1)).register_forward_hook(network.write)
