"""LoRA (Hu et al., 2021) placed per layer and per module, with per-module-group ranks, via peft."""

from __future__ import annotations

import re
from collections import Counter
from typing import Literal

from optuna.distributions import BaseDistribution, CategoricalDistribution
from pydantic import Field, PositiveInt

from autopeft.methods.base import PeftMethod, ValueOf, register_method
from autopeft.models import GENERIC_MODULES, BackboneInfo
from autopeft.space.values import Strict, ValueSpec, distribution, numbers

BOOL = CategoricalDistribution([False, True])


class LoraModules(Strict):
    """Which generic modules may carry LoRA."""

    choices: list[str] = Field(min_length=1, description=f"generic module names: {', '.join(GENERIC_MODULES)}")
    searched: bool = Field(True, description="search each module on/off; false keeps every listed module on")
    per_layer: bool = Field(False, description="decide modules separately in each layer (else shared by all layers)")


class LoraRank(Strict):
    """Which ranks LoRA may use, and how finely they are chosen."""

    choices: list[PositiveInt] = Field(min_length=1, description="allowed ranks")
    per: Literal["shared", "module", "layer"] = Field(
        "module", description="one rank for all, one per module type, or one per layer"
    )


class LoraSection(Strict):
    """The ``methods.lora`` section of a space file."""

    layers: Literal["searched", "all"] | list[int] = Field(
        "searched", description="'searched': each layer on/off is a dimension; 'all'; or fixed layer indices"
    )
    modules: LoraModules
    rank: LoraRank
    alpha: ValueSpec = Field(16, description="lora_alpha (scaling = alpha / rank)")
    dropout: ValueSpec = Field(0.0, description="dropout on the LoRA input")


@register_method
class Lora(PeftMethod):
    """Low-rank updates ``B @ A`` beside frozen Linear weights: ``r * (in + out)`` parameters each."""

    name = "lora"
    section = LoraSection

    def __init__(self) -> None:
        self._tables: dict[int, tuple] = {}

    def _layers(self, section: LoraSection, info: BackboneInfo) -> list[int]:
        return list(range(info.num_layers)) if isinstance(section.layers, str) else list(section.layers)

    def check(self, section: LoraSection, info: BackboneInfo) -> str | None:
        for module in section.modules.choices:
            if module not in info.modules:
                return (
                    f"modules.choices: {module!r} is not a module of this {info.model_type} model; "
                    f"allowed: {', '.join(info.modules)}"
                )
        for layer in self._layers(section, info):
            if not 0 <= layer < info.num_layers:
                return f"layers: layer {layer} does not exist; the model has layers 0..{info.num_layers - 1}"
        widest = max(min(s.in_features, s.out_features) for s in info.sites.values())
        if max(section.rank.choices) > widest:
            return f"rank.choices: rank {max(section.rank.choices)} exceeds the module width {widest}"
        for key in ("alpha", "dropout"):
            spec = getattr(section, key)
            low, high = min(numbers(spec)), max(numbers(spec))
            if key == "dropout" and not (0 <= low and high < 1):
                return f"dropout: values must lie in [0, 1), got {numbers(spec)}"
            if key == "alpha" and low <= 0:
                return f"alpha: values must be positive, got {numbers(spec)}"
        return None

    def _rank_dims(self, section: LoraSection, info: BackboneInfo) -> dict[str, str]:
        """Target (layer, module) key -> name of the rank dimension that sizes it."""
        per = section.rank.per
        keys = {}
        for layer in self._layers(section, info):
            for module in section.modules.choices:
                suffix = "" if per == "shared" else f".{module if per == 'module' else layer}"
                keys[f"{layer}.{module}"] = f"lora.rank{suffix}"
        return keys

    def dimensions(self, section: LoraSection, info: BackboneInfo) -> dict[str, BaseDistribution]:
        dims: dict[str, BaseDistribution] = {}
        layers = self._layers(section, info)
        if section.layers == "searched":
            dims.update({f"lora.layer.{i}": BOOL for i in layers})
        if section.modules.searched:
            if section.modules.per_layer:
                dims.update({f"lora.module.{i}.{m}": BOOL for i in layers for m in section.modules.choices})
            else:
                dims.update({f"lora.module.{m}": BOOL for m in section.modules.choices})
        if len(section.rank.choices) > 1:
            ranks = CategoricalDistribution(section.rank.choices)
            dims.update({name: ranks for name in sorted(set(self._rank_dims(section, info).values()))})
        for key in ("alpha", "dropout"):
            dist = distribution(getattr(section, key))
            if dist is not None:
                dims[f"lora.{key}"] = dist
        return dims

    def _site_table(self, section: LoraSection, info: BackboneInfo) -> list[tuple]:
        """Per candidate site: (layer, module, layer dim, module dim, rank dim), computed once per space.

        Decoding runs thousands of times per proposal (repair and candidate pools), so the names of
        the dimensions deciding each site are worked out once and kept with the section.
        """
        cached = self._tables.get(id(section))
        if cached is not None and cached[0] is section and cached[1] is info:
            return cached[2]
        rank_dims = self._rank_dims(section, info)
        modules = section.modules
        table = []
        for layer in self._layers(section, info):
            layer_dim = f"lora.layer.{layer}" if section.layers == "searched" else None
            for module in modules.choices:
                module_dim = None
                if modules.searched:
                    module_dim = f"lora.module.{layer}.{module}" if modules.per_layer else f"lora.module.{module}"
                table.append((layer, module, layer_dim, module_dim, rank_dims[f"{layer}.{module}"]))
        self._tables[id(section)] = (section, info, table)
        return table

    def decode(self, section: LoraSection, value_of: ValueOf, info: BackboneInfo) -> dict | None:
        fixed_rank = section.rank.choices[0]
        targets = [
            [layer, module, int(value_of(rank_dim, fixed_rank))]
            for layer, module, layer_dim, module_dim, rank_dim in self._site_table(section, info)
            if (layer_dim is None or value_of(layer_dim, True)) and (module_dim is None or value_of(module_dim, True))
        ]
        if not targets:
            return None
        return {
            "targets": targets,
            "alpha": float(value_of("lora.alpha", section.alpha)),
            "dropout": float(value_of("lora.dropout", section.dropout)),
        }

    def count(self, plan: dict, info: BackboneInfo) -> int:
        total = 0
        for layer, module, rank in plan["targets"]:
            site = info.sites[(layer, module)]
            total += rank * (site.in_features + site.out_features)
        return total

    def minimal_count(self, section: LoraSection, info: BackboneInfo) -> int:
        rank = min(section.rank.choices)
        layers = self._layers(section, info)
        modules = section.modules

        def cost(layer: int, module: str) -> int:
            site = info.sites[(layer, module)]
            return rank * (site.in_features + site.out_features)

        # Layers not searched are all on; modules not searched are all on.
        layer_sets = [[i] for i in layers] if section.layers == "searched" else [layers]
        module_sets = [[m] for m in modules.choices] if modules.searched else [modules.choices]
        return min(sum(cost(i, m) for i in ls for m in ms) for ls in layer_sets for ms in module_sets)

    def peft_config(self, plan: dict, info: BackboneInfo):
        from peft import LoraConfig, TaskType

        names = {(layer, module): info.sites[(layer, module)].name for layer, module, _ in plan["targets"]}
        ranks = {names[(layer, module)]: rank for layer, module, rank in plan["targets"]}
        default_rank = Counter(ranks.values()).most_common(1)[0][0]
        return LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=default_rank,
            lora_alpha=plan["alpha"],
            lora_dropout=plan["dropout"],
            target_modules=sorted(ranks),
            rank_pattern={re.escape(name): r for name, r in sorted(ranks.items()) if r != default_rank},
        )
