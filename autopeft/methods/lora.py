"""LoRA (Hu et al., 2021) placed per layer and per module, with per-site ranks, via peft; and its variants.

The variants peft users reach for first are knobs of the same section, each a searchable value:
``use_dora`` (DoRA, Liu et al., 2024: a learnt magnitude per output feature, ``out_features`` more
parameters per site), ``use_rslora`` (rank-stabilised scaling ``alpha / sqrt(r)``, Kalajdzievski,
2023), ``init`` (peft's ``init_lora_weights``: ``default`` and ``gaussian`` start with ``B = 0``;
``pissa`` (fast SVD, 4 subspace iterations), ``olora`` and ``orthogonal`` move principal or orthogonal
directions of the frozen weight into ``A`` and ``B`` and subtract them from the weight, so each
starts where the backbone is) and ``loraplus_ratio`` (LoRA+, Hayou et al., 2024: the learning rate of
``B`` over ``A``; peft's ``create_loraplus_optimizer`` builds the optimizer, 1 is plain LoRA).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING, Literal

from pydantic import Field, PositiveInt

from autopeft.methods.base import BuildContext, MethodSection, PeftMethod, ValueOf, register_method
from autopeft.methods.placement import (
    Layers,
    ModuleChoice,
    Sizes,
    check_module_placement,
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


class LoraSection(MethodSection):
    """The ``methods.lora`` section of a space file."""

    layers: Layers = Field(
        "searched", description="'searched': each layer on/off is a dimension; 'all'; or fixed layer indices"
    )
    modules: ModuleChoice
    rank: Sizes = Field(description="allowed ranks, and whether one per module type, layer or site")
    alpha: ValueSpec = Field(16, description="lora_alpha (scaling = alpha / rank)")
    dropout: ValueSpec = Field(0.0, description="dropout on the LoRA input")
    use_dora: ValueSpec = Field(False, description="DoRA: a learnt magnitude per output feature (true, false)")
    use_rslora: ValueSpec = Field(False, description="rank-stabilised scaling alpha / sqrt(rank) (true, false)")
    init: ValueSpec = Field("default", description="initialisation: default, gaussian, pissa, olora, orthogonal")
    loraplus_ratio: ValueSpec = Field(1, description="LoRA+: learning rate of B over A (1: plain LoRA)")


INITS = {
    "default": True,
    "gaussian": "gaussian",
    "pissa": "pissa_niter_4",
    "olora": "olora",
    "orthogonal": "orthogonal",
}
"""``init`` values and what peft's ``init_lora_weights`` receives for each (``pissa``: fast SVD)."""
EVEN_RANK_INITS = ("orthogonal",)
"""Initialisations peft allows for even ranks only."""


class LoraPlan(Strict):
    """A LoRA configuration: ``[layer, module, rank]`` per adapted site, alpha, dropout and the variant knobs."""

    targets: list[tuple[int, str, PositiveInt]] = Field(min_length=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    use_dora: bool = False
    use_rslora: bool = False
    init: Literal["default", "gaussian", "pissa", "olora", "orthogonal"] = "default"
    loraplus_ratio: float = Field(1.0, ge=1)


def low_rank_kept(targets, info: BackboneInfo, rank_of, dropout: float = 0.0) -> dict[tuple, int]:
    """What low-rank updates ``B @ A x`` keep for the backward pass, per token: each site's input ``x`` (once per
    layer and tensor read, :data:`~autopeft.models.MODULE_INPUTS`), its rank-``r`` intermediate, and with
    dropout the dropped copy of ``x`` and its mask (a byte: a quarter of an element).

    Args:
        targets: the plan's ``[layer, module, ...]`` sites.
        info: the backbone.
        rank_of: ``target -> rank``.
        dropout: the input dropout.
    """
    kept: dict[tuple, int] = {}
    for target in targets:
        layer, module = int(target[0]), str(target[1])
        width = info.sites[(layer, module)].in_features
        kept[("input", layer, MODULE_INPUTS[module])] = width
        kept[("low_rank", layer, module)] = int(rank_of(target))
        if dropout > 0:
            kept[("dropped_input", layer, module)] = width + width // 4
    return kept


def check_sites(targets, info: BackboneInfo) -> str | None:
    """``"targets: ..."`` when a plan's ``[layer, module, ...]`` site does not exist in the backbone.

    Args:
        targets: the plan's sites, each starting with layer and generic module name.
        info: the backbone.
    """
    for layer, module, *_ in targets:
        if module not in info.modules:
            allowed = ", ".join(info.modules)
            return f"targets: {module!r} is not a module of this {info.model_type} model; allowed: {allowed}"
        if not 0 <= layer < info.num_layers:
            return f"targets: layer {layer} does not exist; the model has layers 0..{info.num_layers - 1}"
    return None


def check_low_rank(targets, info: BackboneInfo) -> str | None:
    """``"targets: ..."`` when a plan's rank exceeds the width of its module.

    Args:
        targets: the plan's ``[layer, module, rank]`` sites.
        info: the backbone.
    """
    problem = check_sites(targets, info)
    if problem:
        return problem
    for layer, module, rank in targets:
        site = info.sites[(layer, module)]
        if rank > min(site.in_features, site.out_features):
            return f"targets: rank {rank} at layer {layer} {module} exceeds the module width"
    return None


def site_names(targets, info: BackboneInfo) -> list[str]:
    """Module paths (relative to the backbone) of a plan's ``[layer, module, ...]`` sites."""
    return [info.sites[(layer, module)].name for layer, module, *_ in targets]


def inject(model, config, name: str) -> None:
    """Insert a peft tuner's layers into ``model`` in place (its backbone's own Linear modules).

    Args:
        model: the sequence-classification model.
        config: the peft configuration (its target paths are relative to the backbone).
        name: the adapter's name.
    """
    import warnings

    from peft import inject_adapter_in_model

    with warnings.catch_warnings():  # "already found a peft_config": intended, each method is its own adapter
        warnings.simplefilter("ignore", UserWarning)
        inject_adapter_in_model(config, model.base_model, adapter_name=name)


@register_method
class Lora(PeftMethod):
    """Low-rank updates ``B @ A`` beside frozen Linear weights: ``r * (in + out)`` parameters each."""

    name = "lora"
    order = 1
    section = LoraSection
    plan = LoraPlan
    example = {"targets": [[0, "query", 2], [2, "ffn_out", 4]], "alpha": 16.0, "dropout": 0.0}

    def __init__(self) -> None:
        self._tables: dict[int, tuple] = {}

    def check(self, section: LoraSection, info: BackboneInfo) -> str | None:
        problem = check_module_placement(section.layers, section.modules, info)
        if problem:
            return problem
        widest = max(min(s.in_features, s.out_features) for s in info.sites.values())
        if max(section.rank.choices) > widest:
            return f"rank.choices: rank {max(section.rank.choices)} exceeds the module width {widest}"
        return check_alpha_dropout(section) or check_variants(section)

    def dimensions(self, section: LoraSection, info: BackboneInfo) -> dict[str, BaseDistribution]:
        dims = placement_dimensions(self.name, section.layers, section.modules, info)
        dims.update(size_dimensions(self.name, "rank", section.rank, self._site_table(section, info)))
        for key in ("alpha", "dropout", *VARIANT_KEYS):
            dist = distribution(getattr(section, key))
            if dist is not None:
                dims[f"{self.name}.{key}"] = dist
        return dims

    def _site_table(self, section: LoraSection, info: BackboneInfo) -> list[tuple]:
        """Per candidate site: (layer, module, layer dim, module dim, rank dim), computed once per space.

        Decoding runs thousands of times per proposal (repair and candidate pools), so the names of
        the dimensions deciding each site are worked out once and kept with the section.
        """
        cached = self._tables.get(id(section))
        if cached is not None and cached[0] is section and cached[1] is info:
            return cached[2]
        table = [
            (*row, size_dimension(self.name, "rank", section.rank.per, row[0], row[1]))
            for row in placement_table(self.name, section.layers, section.modules, info)
        ]
        self._tables[id(section)] = (section, info, table)
        return table

    def decode(self, section: LoraSection, value_of: ValueOf, info: BackboneInfo) -> dict | None:
        fixed_rank = section.rank.choices[0]
        table = self._site_table(section, info)
        on = set(placed([row[:4] for row in table], value_of))
        targets = [
            [layer, module, int(value_of(rank_dim, fixed_rank))]
            for layer, module, _, _, rank_dim in table
            if (layer, module) in on
        ]
        if not targets:
            return None
        plan = {
            "targets": targets,
            "alpha": float(value_of(f"{self.name}.alpha", section.alpha)),
            "dropout": float(value_of(f"{self.name}.dropout", section.dropout)),
            "use_dora": bool(value_of(f"{self.name}.use_dora", section.use_dora)),
            "use_rslora": bool(value_of(f"{self.name}.use_rslora", section.use_rslora)),
            "init": str(value_of(f"{self.name}.init", section.init)),
            "loraplus_ratio": float(value_of(f"{self.name}.loraplus_ratio", section.loraplus_ratio)),
        }
        return plan  # check() refused odd ranks beside an even-rank initialisation

    def check_plan(self, plan: dict, info: BackboneInfo) -> str | None:
        problem = super().check_plan(plan, info) or check_low_rank(plan["targets"], info)
        init = plan.get("init", "default")
        if not problem and init in EVEN_RANK_INITS and any(rank % 2 for *_, rank in plan["targets"]):
            problem = f"init: {init} initialisation needs even ranks (peft)"
        return problem

    def count(self, plan: dict, info: BackboneInfo) -> int:
        total = 0
        for layer, module, rank in plan["targets"]:
            site = info.sites[(layer, module)]
            total += rank * (site.in_features + site.out_features) + (site.out_features if plan.get("use_dora") else 0)
        return total

    def minimal_count(self, section: LoraSection, info: BackboneInfo) -> int:
        rank = min(section.rank.choices)
        dora = min(map(bool, numbers(section.use_dora)))  # the cheapest: without DoRA when it is searched
        return min(
            sum(
                rank * (info.sites[s].in_features + info.sites[s].out_features)
                + (info.sites[s].out_features if dora else 0)
                for s in sites
            )
            for sites in minimal_sites(section.layers, section.modules, info)
        )

    def kept_activations(self, plan: dict, info: BackboneInfo) -> dict[tuple, int]:
        return low_rank_kept(plan["targets"], info, lambda t: t[2], plan.get("dropout", 0.0))

    def describe(self, plan: dict) -> str:
        variants = [name for name, on in (("dora", plan.get("use_dora")), ("rslora", plan.get("use_rslora"))) if on]
        if plan.get("init", "default") != "default":
            variants.append(f"init {plan['init']}")
        if plan.get("loraplus_ratio", 1.0) != 1.0:
            variants.append(f"lora+ {plan['loraplus_ratio']:g}")
        return super().describe(plan) + (f" ({', '.join(variants)})" if variants else "")

    def optimizer(self, plan: dict, model, lr: float):
        if plan.get("loraplus_ratio", 1.0) == 1.0:
            return None
        import torch
        from peft.optimizers import create_loraplus_optimizer

        ratio = plan["loraplus_ratio"]
        return create_loraplus_optimizer(model, torch.optim.AdamW, lr=lr, loraplus_lr_ratio=ratio, weight_decay=0.0)

    def _config(self, plan: dict, info: BackboneInfo, task_type):
        from peft import LoraConfig

        ranks = dict(zip(site_names(plan["targets"], info), (t[2] for t in plan["targets"]), strict=True))
        default_rank = Counter(ranks.values()).most_common(1)[0][0]
        return LoraConfig(
            task_type=task_type,
            r=default_rank,
            lora_alpha=plan["alpha"],
            lora_dropout=plan["dropout"],
            target_modules=sorted(ranks),
            rank_pattern={re.escape(name): r for name, r in sorted(ranks.items()) if r != default_rank},
            use_dora=plan.get("use_dora", False),
            use_rslora=plan.get("use_rslora", False),
            init_lora_weights=INITS[plan.get("init", "default")],
        )

    def peft_config(self, plan: dict, info: BackboneInfo, total_steps: int = 1000):
        from peft import TaskType

        return self._config(plan, info, TaskType.SEQ_CLS)

    def apply(self, model, plan: dict, context: BuildContext) -> None:
        inject(model, self._config(plan, context.info, None), self.name)


VARIANT_KEYS = ("use_dora", "use_rslora", "init", "loraplus_ratio")
"""The section's keys of LoRA's variants (each a fixed value or searched)."""


def check_variants(section: LoraSection) -> str | None:
    """``"<key>: ..."`` when a variant knob of a LoRA section has values peft does not take."""
    for key in ("use_dora", "use_rslora"):
        if not all_booleans(getattr(section, key)):
            return f"{key}: expected true or false, got {numbers(getattr(section, key))}"
    inits = [str(v) for v in numbers(section.init)]
    unknown = [v for v in inits if v not in INITS]
    if unknown:
        return f"init: {unknown[0]!r} is not known; allowed: {', '.join(INITS)}"
    odd = [r for r in section.rank.choices if r % 2]
    even_only = [v for v in inits if v in EVEN_RANK_INITS]
    if even_only and odd:
        return f"init: {even_only[0]} initialisation needs even ranks (peft); rank.choices has {odd}"
    ratios = numbers(section.loraplus_ratio)
    if not all_numbers(section.loraplus_ratio) or min(ratios) < 1:
        return f"loraplus_ratio: numbers of at least 1 are expected, got {ratios}"
    return None


def check_alpha_dropout(section) -> str | None:
    """``"alpha: ..."``/``"dropout: ..."`` when a LoRA-style section's values are out of range."""
    for key in ("alpha", "dropout"):
        values = numbers(getattr(section, key))
        if not all_numbers(getattr(section, key)):
            return f"{key}: expected numbers, got {values}"
        if key == "dropout" and not (0 <= min(values) and max(values) < 1):
            return f"dropout: values must lie in [0, 1), got {values}"
        if key == "alpha" and min(values) <= 0:
            return f"alpha: values must be positive, got {values}"
    return None
