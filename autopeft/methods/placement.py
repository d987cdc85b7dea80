"""Where a method goes: which layers and which of their modules (or positions), searched or fixed.

Shared by every method placed per layer: ``layers`` says which layers may carry it, ``modules`` which
generic modules (LoRA, IA3) or positions (adapters) inside a layer, each optionally searched on/off,
per layer or shared by all layers. Each method names its own dimensions ``<method>.layer.<i>`` and
``<method>.module[.<i>].<m>``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from pydantic import Field, PositiveInt

from autopeft.methods.base import MethodSection
from autopeft.models import BackboneInfo
from autopeft.schema import Strict

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution


def on_off() -> BaseDistribution:
    """The distribution of an on/off dimension (Optuna is imported only when a space is built)."""
    from optuna.distributions import CategoricalDistribution

    return CategoricalDistribution([False, True])


Layers = Literal["searched", "all"] | list[int]


class ModuleChoice(Strict):
    """Which modules (or positions) of a layer may carry the method."""

    choices: list[str] = Field(min_length=1, description="generic module names (or positions) allowed")
    searched: bool = Field(True, description="search each on/off; false keeps every listed one on")
    per_layer: bool = Field(False, description="decide separately in each layer (else shared by all layers)")


class Sizes(Strict):
    """Which sizes (ranks, bottleneck widths, prefix lengths) a method may use, and how finely chosen."""

    choices: list[PositiveInt] = Field(min_length=1, description="allowed sizes")
    per: Literal["shared", "module", "layer", "site"] = Field(
        "module",
        description="one size for all, one per module type (or position), one per layer, or one per (layer, module)",
    )


def size_dimension(prefix: str, key: str, per: str, layer: int, module: str) -> str:
    """Name of the dimension sizing site ``(layer, module)``: ``lora.rank.value``, ``prefix.length.3``...

    Args:
        prefix: the method's name.
        key: the size's key (``rank``, ``size``, ``length``).
        per: how finely sizes are chosen (see :class:`Sizes`).
        layer: the site's layer.
        module: the site's module or position.
    """
    suffix = {"shared": "", "module": f".{module}", "layer": f".{layer}", "site": f".{layer}.{module}"}[per]
    return f"{prefix}.{key}{suffix}"


def size_dimensions(prefix: str, key: str, sizes: Sizes, table: list[tuple]) -> dict[str, BaseDistribution]:
    """The size dimensions of a placement table (none when only one size is allowed).

    Args:
        prefix: the method's name.
        key: the size's key.
        sizes: the allowed sizes.
        table: from :func:`placement_table`.
    """
    if len(sizes.choices) == 1:
        return {}
    from optuna.distributions import CategoricalDistribution

    dist = CategoricalDistribution(sizes.choices)
    return {name: dist for name in sorted({size_dimension(prefix, key, sizes.per, row[0], row[1]) for row in table})}


def layer_indices(layers: Layers, info: BackboneInfo) -> list[int]:
    """The layers a ``layers`` value allows.

    Args:
        layers: ``searched``, ``all`` or fixed indices.
        info: the backbone.
    """
    return list(range(info.num_layers)) if isinstance(layers, str) else list(layers)


def check_layers(layers: Layers, info: BackboneInfo) -> str | None:
    """``"layers: ..."`` when a fixed layer does not exist.

    Args:
        layers: the section's ``layers``.
        info: the backbone.
    """
    for layer in layer_indices(layers, info):
        if not 0 <= layer < info.num_layers:
            return f"layers: layer {layer} does not exist; the model has layers 0..{info.num_layers - 1}"
    return None


def check_choices(key: str, values: list[str], allowed: tuple[str, ...], what: str) -> str | None:
    """``"<key>: ..."`` naming the first value not in ``allowed``.

    Args:
        key: the key being checked (for the message).
        values: the values written.
        allowed: the values allowed.
        what: what the values are (for the message).
    """
    for value in values:
        if value not in allowed:
            return f"{key}: {value!r} is not {what}; allowed: {', '.join(allowed)}"
    return None


def check_module_placement(layers: Layers, modules: ModuleChoice, info: BackboneInfo) -> str | None:
    """``"modules.choices: ..."``/``"layers: ..."`` when a placement names what the backbone lacks.

    Args:
        layers: the section's ``layers``.
        modules: the section's ``modules`` (generic module names).
        info: the backbone.
    """
    what = f"a module of this {info.model_type} model"
    return check_choices("modules.choices", modules.choices, info.modules, what) or check_layers(layers, info)


def placement_dimensions(prefix: str, layers: Layers, modules: ModuleChoice, info: BackboneInfo) -> dict:
    """On/off dimensions of a placement.

    Args:
        prefix: the method's name.
        layers: the section's ``layers``.
        modules: the section's ``modules``.
        info: the backbone.
    """
    dims: dict[str, BaseDistribution] = {}
    indices = layer_indices(layers, info)
    if layers == "searched":
        dims.update({layer_switch(prefix, i): on_off() for i in indices})
    if modules.searched:
        layers_of_modules = indices if modules.per_layer else [None]
        dims.update({module_switch(prefix, m, i): on_off() for i in layers_of_modules for m in modules.choices})
    return dims


def layer_switch(prefix: str, layer: int) -> str:
    """The name of the on/off dimension of a method in one layer.

    Args:
        prefix: the method's name.
        layer: the layer's index.
    """
    return f"{prefix}.{_LAYER}.{layer}"


def module_switch(prefix: str, module: str, layer: int | None = None) -> str:
    """The name of the on/off dimension of a method on one module type: in every layer (``layer`` is ``None``), or
    in one layer (modules searched per layer).

    Args:
        prefix: the method's name.
        module: the generic module name (or position).
        layer: the layer's index, when modules are searched per layer.
    """
    return f"{prefix}.{_MODULE}.{module}" if layer is None else f"{prefix}.{_MODULE}.{layer}.{module}"


_LAYER, _MODULE = "layer", "module"
_AXIS = re.compile(rf"^(?P<axis>.+\.(?:{_LAYER}|{_MODULE}))(?:\.\d+)?\.[^.]+$")


def placement_axis(dimension: str) -> str | None:
    """The placement axis an on/off dimension switches one member of: ``<method>.layer`` (its layers) or
    ``<method>.module`` (its module types, shared by all layers, or its (layer, module) sites when modules are
    searched per layer); ``None`` for any other dimension.

    Args:
        dimension: a dimension's name, as :func:`placement_dimensions` names it.
    """
    match = _AXIS.match(dimension)
    return match["axis"] if match else None


def placement_table(prefix: str, layers: Layers, modules: ModuleChoice, info: BackboneInfo) -> list[tuple]:
    """Per candidate site: ``(layer, module, layer dimension or None, module dimension or None)``.

    Args:
        prefix: the method's name.
        layers: the section's ``layers``.
        modules: the section's ``modules``.
        info: the backbone.
    """
    module_searched = modules.searched
    table = []
    for layer in layer_indices(layers, info):
        layer_dim = layer_switch(prefix, layer) if layers == "searched" else None
        for module in modules.choices:
            module_dim = None
            if module_searched:
                module_dim = module_switch(prefix, module, layer if modules.per_layer else None)
            table.append((layer, module, layer_dim, module_dim))
    return table


def placed(table: list[tuple], value_of) -> list[tuple[int, str]]:
    """The ``(layer, module)`` sites a configuration turns on.

    Args:
        table: from :func:`placement_table`.
        value_of: the configuration's values.
    """
    return [
        (layer, module)
        for layer, module, layer_dim, module_dim in table
        if (layer_dim is None or value_of(layer_dim, True)) and (module_dim is None or value_of(module_dim, True))
    ]


def minimal_sites(layers: Layers, modules: ModuleChoice, info: BackboneInfo) -> list[list[tuple[int, str]]]:
    """Every smallest way to place the method: one searched layer x one searched module, or all fixed ones.

    Args:
        layers: the section's ``layers``.
        modules: the section's ``modules``.
        info: the backbone.
    """
    indices = layer_indices(layers, info)
    module_searched = modules.searched
    layer_sets = [[i] for i in indices] if layers == "searched" else [indices]
    module_sets = [[m] for m in modules.choices] if module_searched else [modules.choices]
    if modules.per_layer and module_searched:  # one (layer, module) pair is enough
        layer_sets = [[i] for i in indices]
    return [[(i, m) for i in ls for m in ms] for ls in layer_sets for ms in module_sets]


class PlacedSection(MethodSection):
    """A method section placed on chosen layers and modules (IA3, AdaLoRA, VeRA ...): ``layers``, ``modules``."""

    layers: Layers = Field("searched", description="'searched', 'all', or fixed layer indices")
    modules: ModuleChoice

    def check_placement(self, info: BackboneInfo) -> str | None:
        """``"modules.choices: ..."``/``"layers: ..."`` when the placement names what the backbone lacks."""
        return check_module_placement(self.layers, self.modules, info)

    def placement_dimensions(self, prefix: str, info: BackboneInfo) -> dict[str, BaseDistribution]:
        """The on/off dimensions of the placement (named after the method, ``prefix``)."""
        return placement_dimensions(prefix, self.layers, self.modules, info)

    def placed_sites(self, prefix: str, value_of, info: BackboneInfo) -> list[tuple[int, str]]:
        """The ``(layer, module)`` sites a configuration turns on."""
        return placed(placement_table(prefix, self.layers, self.modules, info), value_of)

    def minimal_sites(self, info: BackboneInfo) -> list[list[tuple[int, str]]]:
        """Every smallest way to place the method (see :func:`minimal_sites`)."""
        return minimal_sites(self.layers, self.modules, info)
