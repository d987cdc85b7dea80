"""Bottleneck adapters, serial (Houlsby et al., 2019; Pfeiffer et al., 2021) and parallel (He et al., 2022).

peft has no bottleneck adapters, so they are small modules of our own, inserted with forward hooks
on the backbone's existing modules (no architecture code is copied or patched):

- *serial*: after a sub-layer's output projection, before its residual LayerNorm,
  ``h <- h + f(h)`` (``residual: false``: ``h <- f(h)``). Position ``attn`` follows the attention
  output projection (``attn_out``), ``ffn`` the FFN down-projection (``ffn_out``). Houlsby places
  both; Pfeiffer only ``ffn``.
- *parallel*: beside a sub-layer, fed with the sub-layer's input,
  ``h <- h + s * f(x)``. Position ``attn`` reads the attention's input (the input of ``query``)
  and adds to ``attn_out``; ``ffn`` reads the FFN's input (of ``ffn_in``) and adds to ``ffn_out``.

``f(x) = up(act(down(x)))`` with ``down: hidden -> size`` and ``up: size -> hidden``, both with
biases: ``2 * hidden * size + size + hidden`` trainable parameters. ``up`` starts at zero, so a
freshly inserted adapter (with its residual) leaves the backbone's output unchanged.
The adapters live in ``backbone.autopeft_adapters`` (a ``ModuleDict``), so they are saved and
loaded with the model's state dict.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import Field, PositiveInt

from autopeft.methods.base import BuildContext, MethodSection, PeftMethod, ValueOf, register_method
from autopeft.methods.placement import (
    Layers,
    ModuleChoice,
    Sizes,
    check_choices,
    check_layers,
    minimal_sites,
    placed,
    placement_dimensions,
    placement_table,
    size_dimension,
    size_dimensions,
)
from autopeft.models import MODULE_INPUTS, BackboneInfo
from autopeft.schema import Strict, ValueSpec, all_booleans, all_numbers, distribution, numbers

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

POSITIONS = ("attn", "ffn")
ACTIVATIONS = {"relu": torch.nn.ReLU, "gelu": torch.nn.GELU, "silu": torch.nn.SiLU, "tanh": torch.nn.Tanh}
_INPUT_OF = {"attn": "query", "ffn": "ffn_in"}  # module whose input a parallel adapter reads
_OUTPUT_OF = {"attn": "attn_out", "ffn": "ffn_out"}  # module whose output the adapter changes


class Bottleneck(torch.nn.Module):
    """``up(act(down(x)))``, with ``up`` initialised to zero.

    Args:
        hidden: width of the residual stream.
        size: bottleneck width.
        activation: name in :data:`ACTIVATIONS`.
    """

    def __init__(self, hidden: int, size: int, activation: str) -> None:
        super().__init__()
        self.down = torch.nn.Linear(hidden, size)
        self.act = ACTIVATIONS[activation]()
        self.up = torch.nn.Linear(size, hidden)
        torch.nn.init.normal_(self.down.weight, std=0.02)
        torch.nn.init.zeros_(self.down.bias)
        torch.nn.init.zeros_(self.up.weight)
        torch.nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The adapter's output (without any residual)."""
        return self.up(self.act(self.down(x)))

    # The hooks are bound methods, not closures: a deep copy of the model (the memory measurement's) calls its
    # own copy of the adapter.
    def serial(self, module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        """Forward hook after a sub-layer's output projection: ``h + f(h)``, or ``f(h)`` without the residual."""
        return output + self(output) if self.residual else self(output)

    def remember_input(self, module: torch.nn.Module, args: tuple) -> None:
        """Forward pre-hook on the sub-layer's first module: keep its input for :meth:`parallel`."""
        self.seen = args[0]

    def parallel(self, module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        """Forward hook after the sub-layer's output projection: ``h + scale * f(x)``."""
        seen, self.seen = self.seen, None
        return output + self.scale * self(seen)


class AdapterSection(MethodSection):
    """Keys shared by the ``serial_adapter`` and ``parallel_adapter`` sections."""

    layers: Layers = Field("searched", description="'searched', 'all', or fixed layer indices")
    positions: ModuleChoice = Field(description="positions in a layer: attn, ffn")
    size: Sizes = Field(description="bottleneck widths, and whether one per position, layer or site")
    activation: ValueSpec = Field("relu", description=f"non-linearity: {', '.join(ACTIVATIONS)}")


class SerialSection(AdapterSection):
    """The ``methods.serial_adapter`` section of a space file."""

    residual: ValueSpec = Field(True, description="add the adapter's output to its input (Houlsby); false replaces it")


class ParallelSection(AdapterSection):
    """The ``methods.parallel_adapter`` section of a space file."""

    scale: ValueSpec = Field(1.0, description="s in h + s * f(x) (He et al. use 4 beside the FFN)")


class AdapterPlan(Strict):
    """A bottleneck-adapter configuration: ``[layer, position, size]`` per adapter, and its options."""

    targets: list[tuple[int, str, PositiveInt]] = Field(min_length=1)
    activation: str = "relu"
    residual: bool = True
    scale: float = 1.0


class _Adapters(PeftMethod):
    """What serial and parallel adapters share: placement, sizes, counting and checks."""

    options: ClassVar[tuple[str, ...]]

    def check(self, section: AdapterSection, info: BackboneInfo) -> str | None:
        problem = check_choices("positions.choices", section.positions.choices, POSITIONS, "a position")
        problem = problem or check_layers(section.layers, info)
        missing = [m for p in section.positions.choices for m in (_INPUT_OF[p], _OUTPUT_OF[p]) if m not in info.modules]
        if problem or missing:
            return problem or f"positions: this {info.model_type} model has no {missing[0]} module"
        if max(section.size.choices) > info.hidden_size:
            return f"size.choices: size {max(section.size.choices)} exceeds the hidden size {info.hidden_size}"
        return check_choices("activation", list(map(str, numbers(section.activation))), tuple(ACTIVATIONS), "known")

    def gradient_sites(self, plan: dict, info: BackboneInfo) -> list[tuple[int, str]]:
        return [(layer, _OUTPUT_OF[position]) for layer, position, _ in plan["targets"]]

    def kept_activations(self, plan: dict, info: BackboneInfo) -> dict[tuple, int]:
        # the adapter's input (what it reads), and its bottleneck before and after the non-linearity
        kept = {}
        for layer, position, size in plan["targets"]:
            kept[self._reads(layer, position)] = info.hidden_size
            kept[("bottleneck", self.name, layer, position)] = 2 * size
        return kept

    def _reads(self, layer: int, position: str) -> tuple:
        """The key of the tensor an adapter at ``position`` reads (serial: the sub-layer's output)."""
        return ("output", layer, _OUTPUT_OF[position])

    def _table(self, section: AdapterSection, info: BackboneInfo) -> list[tuple]:
        return placement_table(self.name, section.layers, section.positions, info)

    def dimensions(self, section: AdapterSection, info: BackboneInfo) -> dict[str, BaseDistribution]:
        dims = placement_dimensions(self.name, section.layers, section.positions, info)
        dims.update(size_dimensions(self.name, "size", section.size, self._table(section, info)))
        for key in ("activation", *self.options):
            dist = distribution(getattr(section, key))
            if dist is not None:
                dims[f"{self.name}.{key}"] = dist
        return dims

    def decode(self, section: AdapterSection, value_of: ValueOf, info: BackboneInfo) -> dict | None:
        sites = placed(self._table(section, info), value_of)
        if not sites:
            return None
        fixed = section.size.choices[0]
        targets = [
            [
                layer,
                position,
                int(value_of(size_dimension(self.name, "size", section.size.per, layer, position), fixed)),
            ]
            for layer, position in sites
        ]
        plan = {"targets": targets, "activation": str(value_of(f"{self.name}.activation", section.activation))}
        for key in self.options:
            plan[key] = value_of(f"{self.name}.{key}", getattr(section, key))
        return plan

    def check_plan(self, plan: dict, info: BackboneInfo) -> str | None:
        problem = super().check_plan(plan, info)
        if problem:
            return problem
        for layer, position, size in plan["targets"]:
            if position not in POSITIONS:
                return f"targets: {position!r} is not a position; allowed: {', '.join(POSITIONS)}"
            if not 0 <= layer < info.num_layers:
                return f"targets: layer {layer} does not exist; the model has layers 0..{info.num_layers - 1}"
            if size > info.hidden_size:
                return f"targets: size {size} exceeds the hidden size {info.hidden_size}"
        return check_choices("activation", [plan.get("activation", "relu")], tuple(ACTIVATIONS), "known")

    def count(self, plan: dict, info: BackboneInfo) -> int:
        hidden = info.hidden_size
        return sum(2 * hidden * size + size + hidden for _, _, size in plan["targets"])

    def minimal_count(self, section: AdapterSection, info: BackboneInfo) -> int:
        size, hidden = min(section.size.choices), info.hidden_size
        return min(len(sites) for sites in minimal_sites(section.layers, section.positions, info)) * (
            2 * hidden * size + size + hidden
        )

    def _adapters(self, model: torch.nn.Module, plan: dict, context: BuildContext) -> list[tuple]:
        """Create the plan's adapters; return ``(layer, position, adapter)`` per target."""
        backbone = model.base_model
        if not hasattr(backbone, "autopeft_adapters"):
            backbone.autopeft_adapters = torch.nn.ModuleDict()
        created = []
        for layer, position, size in plan["targets"]:
            adapter = Bottleneck(context.info.hidden_size, size, plan.get("activation", "relu"))
            backbone.autopeft_adapters[f"{self.name}_{layer}_{position}"] = adapter
            created.append((layer, position, adapter))
        return created


def _module_at(model: torch.nn.Module, info: BackboneInfo, layer: int, module: str) -> torch.nn.Module:
    """The module now at a site (a peft wrapper when a peft method adapted it)."""
    return model.base_model.get_submodule(info.sites[(layer, module)].name)


@register_method
class SerialAdapter(_Adapters):
    """Bottleneck adapters in series after attention and/or FFN outputs."""

    name = "serial_adapter"
    order = 10
    not_in_peft = "serial bottleneck adapters are not a peft method"
    section = SerialSection
    plan = AdapterPlan
    example = {"targets": [[0, "attn", 4], [2, "ffn", 8]], "activation": "gelu", "residual": True}
    options = ("residual",)

    def check(self, section: SerialSection, info: BackboneInfo) -> str | None:
        problem = super().check(section, info)
        if problem is None and not all_booleans(section.residual):
            return f"residual: expected true or false, got {numbers(section.residual)}"
        return problem

    def apply(self, model: torch.nn.Module, plan: dict, context: BuildContext) -> None:
        for layer, position, adapter in self._adapters(model, plan, context):
            adapter.residual = bool(plan.get("residual", True))
            _module_at(model, context.info, layer, _OUTPUT_OF[position]).register_forward_hook(adapter.serial)


@register_method
class ParallelAdapter(_Adapters):
    """Bottleneck adapters beside attention and/or FFN sub-layers, scaled."""

    name = "parallel_adapter"
    order = 11
    not_in_peft = "parallel bottleneck adapters are not a peft method"
    section = ParallelSection
    plan = AdapterPlan
    example = {"targets": [[1, "attn", 4], [1, "ffn", 8]], "scale": 4.0}
    options = ("scale",)

    def check(self, section: ParallelSection, info: BackboneInfo) -> str | None:
        problem = super().check(section, info)
        if problem is None and not all_numbers(section.scale):
            return f"scale: expected numbers, got {numbers(section.scale)}"
        return problem

    def _reads(self, layer: int, position: str) -> tuple:
        return ("input", layer, MODULE_INPUTS[_INPUT_OF[position]])

    def apply(self, model: torch.nn.Module, plan: dict, context: BuildContext) -> None:
        for layer, position, adapter in self._adapters(model, plan, context):
            adapter.scale, adapter.seen = float(plan.get("scale", 1.0)), None
            reads = _module_at(model, context.info, layer, _INPUT_OF[position])
            reads.register_forward_pre_hook(adapter.remember_input)
            _module_at(model, context.info, layer, _OUTPUT_OF[position]).register_forward_hook(adapter.parallel)
