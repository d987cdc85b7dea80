"""Prefix tuning (Li & Liang, 2021) with a prefix length per layer, optionally reparameterised by an MLP.

peft implements prefix tuning with one length shared by all layers (through the key/value cache), so
a per-layer length needs our own: each chosen layer's self-attention gets learnt key and value
vectors for ``length`` virtual tokens, prepended to its keys and values, which every real token may
attend to. They enter through a registered ``transformers`` attention function (the model's own
SDPA or eager attention with the prefix concatenated and the padding mask widened), so no
architecture code is copied or patched. Without reparameterisation a layer holds
``2 * length * hidden`` parameters; with it, ``length * hidden`` embeddings per layer and one
MLP shared by all layers (``hidden -> mlp_hidden -> 2 * hidden``, as peft's ``prefix_projection``)
produce them. Unlike LoRA or adapters, a fresh prefix does change the output (as in the paper).
Where every layer has the same length and there is no reparameterisation, the plan is also
written as peft's ``PrefixTuningConfig`` on export.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import torch
from pydantic import Field, PositiveInt

from autopeft.attention import ATTENTION as FAST_SDPA
from autopeft.attention import sdpa_attention  # SDPA, with cheap dropout masks on CPUs
from autopeft.errors import ConfigError
from autopeft.methods.base import BuildContext, MethodSection, PeftMethod, ValueOf, register_method
from autopeft.methods.placement import (
    Layers,
    Sizes,
    check_layers,
    layer_indices,
    layer_switch,
    on_off,
    size_dimension,
    size_dimensions,
)
from autopeft.models import BackboneInfo
from autopeft.schema import Strict, ValueSpec, all_booleans, distribution, numbers

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

_BASES = ("sdpa", "eager")


class PrefixSection(MethodSection):
    """The ``methods.prefix`` section of a space file."""

    layers: Layers = Field("searched", description="'searched', 'all', or fixed layer indices")
    length: Sizes = Field(description="prefix lengths (virtual tokens); per: shared or layer")
    reparameterize: ValueSpec = Field(False, description="produce the prefixes with an MLP while training")
    mlp_hidden: PositiveInt = Field(64, description="hidden width of the reparameterisation MLP")


class PrefixPlan(Strict):
    """A prefix configuration: ``[layer, length]`` per layer with a prefix."""

    targets: list[tuple[int, PositiveInt]] = Field(min_length=1)
    reparameterize: bool = False
    mlp_hidden: PositiveInt = 64


class LayerPrefix(torch.nn.Module):
    """The key and value prefixes of one layer.

    Args:
        length: virtual tokens.
        hidden: width of keys and values (all heads).
        mlp: the shared reparameterisation MLP, or ``None`` for free key/value parameters.
    """

    def __init__(self, length: int, hidden: int, mlp: torch.nn.Module | None) -> None:
        super().__init__()
        self.mlp = [mlp]  # a list: the shared MLP is registered once, on the backbone
        width = hidden if mlp is not None else 2 * hidden
        self.embedding = torch.nn.Parameter(torch.randn(length, width) * 0.02)

    def key_value(self, heads: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values shaped ``[heads, length, head_dim]``."""
        mlp = self.mlp[0]
        kv = mlp(self.embedding) if mlp is not None else self.embedding
        key, value = kv.chunk(2, dim=-1)
        shape = (kv.shape[0], heads, head_dim)
        return key.reshape(shape).transpose(0, 1), value.reshape(shape).transpose(0, 1)


def _with_prefix(module, query, key, value, attention_mask):
    """Keys, values and mask of an attention call with the module's prefix prepended."""
    prefix: LayerPrefix | None = getattr(module, "autopeft_prefix", None)
    if prefix is None:
        return key, value, attention_mask
    batch, heads, _, head_dim = query.shape
    pk, pv = prefix.key_value(heads, head_dim)
    pk = pk.to(key.dtype).unsqueeze(0).expand(batch, -1, -1, -1)
    pv = pv.to(value.dtype).unsqueeze(0).expand(batch, -1, -1, -1)
    if attention_mask is not None:
        shape = (*attention_mask.shape[:-1], pk.shape[2])
        attend = torch.ones if attention_mask.dtype == torch.bool else torch.zeros
        attention_mask = torch.cat(
            [attend(shape, dtype=attention_mask.dtype, device=attention_mask.device), attention_mask], -1
        )
    return torch.cat([pk, key], dim=2), torch.cat([pv, value], dim=2), attention_mask


def _sdpa_with_prefix(module, query, key, value, attention_mask, **kwargs):
    key, value, attention_mask = _with_prefix(module, query, key, value, attention_mask)
    return sdpa_attention(module, query, key, value, attention_mask, **kwargs)


def _eager_with_prefix(module, query, key, value, attention_mask, **kwargs):
    eager = sys.modules[type(module).__module__].eager_attention_forward
    key, value, attention_mask = _with_prefix(module, query, key, value, attention_mask)
    return eager(module, query, key, value, attention_mask, **kwargs)


def _register_attention() -> None:
    """Make ``autopeft_prefix_<sdpa|eager>`` known to transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    for base, function in zip(_BASES, (_sdpa_with_prefix, _eager_with_prefix), strict=True):
        AttentionInterface.register(f"autopeft_prefix_{base}", function)
        AttentionMaskInterface.register(f"autopeft_prefix_{base}", ALL_MASK_ATTENTION_FUNCTIONS[base])


@register_method
class Prefix(PeftMethod):
    """Learnt key/value prefixes in chosen layers, each with its own length."""

    name = "prefix"
    order = 12
    not_in_peft = "prefix lengths that differ per layer, cover only some layers, or use a per-layer MLP"
    section = PrefixSection
    plan = PrefixPlan
    identity_at_init = False  # the prefixes are attended to from the start (as in the paper)
    example = {"targets": [[0, 3], [2, 5]], "reparameterize": False, "mlp_hidden": 8}

    def check(self, section: PrefixSection, info: BackboneInfo) -> str | None:
        if "query" not in info.modules:
            return f"layers: this {info.model_type} model has no attention module map for prefixes"
        if section.length.per not in ("shared", "layer"):
            return f"length.per: {section.length.per!r} is not allowed; allowed: shared, layer"
        if not all_booleans(section.reparameterize):
            return f"reparameterize: expected true or false, got {numbers(section.reparameterize)}"
        return check_layers(section.layers, info)

    def dimensions(self, section: PrefixSection, info: BackboneInfo) -> dict[str, BaseDistribution]:
        layers = layer_indices(section.layers, info)
        dims: dict[str, BaseDistribution] = {}
        if section.layers == "searched":
            dims.update({layer_switch(self.name, i): on_off() for i in layers})
        dims.update(size_dimensions(self.name, "length", section.length, [(i, "") for i in layers]))
        dist = distribution(section.reparameterize)
        if dist is not None:
            dims[f"{self.name}.reparameterize"] = dist
        return dims

    def decode(self, section: PrefixSection, value_of: ValueOf, info: BackboneInfo) -> dict | None:
        fixed = section.length.choices[0]
        targets = []
        for layer in layer_indices(section.layers, info):
            if section.layers == "searched" and not value_of(layer_switch(self.name, layer), True):
                continue
            name = size_dimension(self.name, "length", section.length.per, layer, "")
            targets.append([layer, int(value_of(name, fixed))])
        if not targets:
            return None
        reparameterize = bool(value_of(f"{self.name}.reparameterize", section.reparameterize))
        return {"targets": targets, "reparameterize": reparameterize, "mlp_hidden": section.mlp_hidden}

    def check_plan(self, plan: dict, info: BackboneInfo) -> str | None:
        problem = super().check_plan(plan, info)
        for layer, _ in [] if problem else plan["targets"]:
            if not 0 <= layer < info.num_layers:
                return f"targets: layer {layer} does not exist; the model has layers 0..{info.num_layers - 1}"
        return problem

    def gradient_sites(self, plan: dict, info: BackboneInfo) -> list[tuple[int, str]]:
        return [(layer, "key") for layer, _ in plan["targets"]]  # the prefixes join the keys and values

    def kept_activations(self, plan: dict, info: BackboneInfo) -> dict[tuple, int]:
        # each query token attends to the prefix too: its probabilities and their dropped copy, per head
        return {("prefix_scores", layer): 2 * info.num_heads * length for layer, length in plan["targets"]}

    def count(self, plan: dict, info: BackboneInfo) -> int:
        hidden, tokens = info.hidden_size, sum(length for _, length in plan["targets"])
        if not plan.get("reparameterize"):
            return 2 * tokens * hidden
        mid = plan.get("mlp_hidden", 64)
        return tokens * hidden + hidden * mid + mid + mid * 2 * hidden + 2 * hidden

    def minimal_count(self, section: PrefixSection, info: BackboneInfo) -> int:
        layers = 1 if section.layers == "searched" else len(layer_indices(section.layers, info))
        reparameterize = min(numbers(section.reparameterize))  # False < True
        plan = {"targets": [[0, min(section.length.choices)]] * layers, "reparameterize": reparameterize}
        return self.count({**plan, "mlp_hidden": section.mlp_hidden}, info)

    def peft_config(self, plan: dict, info: BackboneInfo, total_steps: int = 1000):
        lengths = {length for _, length in plan["targets"]}
        if plan.get("reparameterize") or len(lengths) != 1 or len(plan["targets"]) != info.num_layers:
            return None  # per-layer lengths, a subset of layers or a per-layer MLP: not peft's prefix tuning
        from peft import PrefixTuningConfig, TaskType

        return PrefixTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=lengths.pop())

    def apply(self, model: torch.nn.Module, plan: dict, context: BuildContext) -> None:
        base = model.config._attn_implementation
        if base.startswith("autopeft_prefix_"):
            base = base.removeprefix("autopeft_prefix_")
        if base == FAST_SDPA:
            base = "sdpa"  # the prefix wrapper of SDPA takes the same fast path
        if base not in _BASES:
            raise ConfigError(f"prefix tuning needs sdpa or eager attention, the model uses {base!r}")
        _register_attention()
        hidden = context.info.hidden_size
        mlp = None
        backbone = model.base_model
        if plan.get("reparameterize"):
            mid = plan.get("mlp_hidden", 64)
            mlp = torch.nn.Sequential(torch.nn.Linear(hidden, mid), torch.nn.Tanh(), torch.nn.Linear(mid, 2 * hidden))
            backbone.autopeft_prefix_mlp = mlp
        for layer, length in plan["targets"]:
            query_path = context.info.sites[(layer, "query")].name
            attention = backbone.get_submodule(query_path.rsplit(".", 1)[0])
            attention.autopeft_prefix = LayerPrefix(length, hidden, mlp)
        model.set_attn_implementation(f"autopeft_prefix_{base}")
