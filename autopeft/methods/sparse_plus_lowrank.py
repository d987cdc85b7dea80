"""Sparse plus low-rank updates (DSEE, Chen et al., 2023; SLTrain, Han et al., 2024): LoRA beside a sparse update.

Each adapted Linear adds ``scaling * B @ A`` (rank ``r``, ``B`` zero at first, as LoRA) plus a sparse update on a
fixed support of ``density x out x in`` entries, chosen once when the method is applied: ``random`` (seeded, as
SLTrain) or ``magnitude`` (the frozen weight's largest entries, as DSEE's magnitude-guided support). The sparse
update is stored as its values and an index buffer of the chosen positions, never as a dense matrix; its values
start at zero, so the model is unchanged at initialisation. Count per site: ``r * (in + out) + nnz`` with
``nnz = max(1, round(density * out * in))``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveInt

from autopeft.methods.base import BuildContext, register_method
from autopeft.methods.delta import PlacedKnobsMethod, SiteUpdate, at_least, attach, positive, within
from autopeft.methods.lora import check_low_rank, low_rank_kept
from autopeft.methods.placement import PlacedSection
from autopeft.models import BackboneInfo
from autopeft.schema import Strict, ValueSpec

SUPPORTS = ("random", "magnitude")


class SparsePlusLowRankSection(PlacedSection):
    """The ``methods.sparse_plus_lowrank`` section of a space file."""

    rank: ValueSpec = Field(4, description="rank of the low-rank part at every adapted site")
    density: ValueSpec = Field(0.01, description="fraction of each weight's entries the sparse part updates")
    support: ValueSpec = Field("random", description=f"how the sparse support is chosen: {', '.join(SUPPORTS)}")
    alpha: ValueSpec = Field(16, description="scaling of the low-rank part = alpha / rank")


class SparsePlusLowRankPlan(Strict):
    """A sparse-plus-low-rank configuration."""

    targets: list[tuple[int, str]] = Field(min_length=1)
    rank: PositiveInt = 4
    density: float = Field(0.01, gt=0, le=1)
    support: Literal["random", "magnitude"] = "random"
    alpha: float = Field(16.0, gt=0)


def nonzeros(density: float, out_features: int, in_features: int) -> int:
    """Entries the sparse part of one site updates."""
    return max(1, round(density * out_features * in_features))


class SparsePlusLowRank(SiteUpdate):
    """``scaling * B @ A x`` plus ``S x``, ``S`` sparse: ``values`` at the flat positions ``index`` of ``out x in``.

    Args:
        weight: the frozen weight (its shape; and its magnitudes for the ``magnitude`` support).
        rank: the low-rank part's rank.
        nnz: the sparse part's entries.
        support: ``random`` or ``magnitude``.
        scaling: ``alpha / rank``.
        seed: the random support's seed.
    """

    def __init__(self, weight: torch.Tensor, rank: int, nnz: int, support: str, scaling: float, seed: int) -> None:
        super().__init__()
        out_features, in_features = weight.shape
        self.lora_A = torch.nn.Parameter(torch.empty(rank, in_features))
        torch.nn.init.kaiming_uniform_(self.lora_A, a=5**0.5)
        self.lora_B = torch.nn.Parameter(torch.zeros(out_features, rank))
        self.values = torch.nn.Parameter(torch.zeros(nnz))
        if support == "magnitude":
            index = torch.topk(weight.detach().abs().flatten().float(), nnz).indices
        else:
            generator = torch.Generator().manual_seed(seed)
            index = torch.randperm(out_features * in_features, generator=generator)[:nnz]
        self.register_buffer("index", torch.sort(index).values)
        self.shape, self.scaling = (out_features, in_features), scaling

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        low_rank = (x @ self.lora_A.T.to(x.dtype)) @ self.lora_B.T.to(x.dtype) * self.scaling
        sparse = torch.zeros(self.shape[0] * self.shape[1], dtype=x.dtype, device=x.device)
        sparse = sparse.index_put((self.index,), self.values.to(x.dtype)).reshape(self.shape)
        return low_rank + torch.nn.functional.linear(x, sparse)


@register_method
class SparsePlusLowRankMethod(PlacedKnobsMethod):
    """LoRA plus a sparse update of fixed support at each adapted Linear."""

    name = "sparse_plus_lowrank"
    order = 5
    section = SparsePlusLowRankSection
    plan = SparsePlusLowRankPlan
    example = {
        "targets": [[0, "query"], [2, "ffn_out"]],
        "rank": 2,
        "density": 0.02,
        "support": "magnitude",
        "alpha": 16.0,
    }
    knobs = {
        "rank": (int, at_least(1)),
        "density": (float, within(0, 1)),
        "support": (str, lambda v: None if set(v) <= set(SUPPORTS) else f"allowed: {', '.join(SUPPORTS)}, got {v}"),
        "alpha": (float, positive),
    }

    def check_plan(self, plan: dict, info: BackboneInfo) -> str | None:
        problem = super().check_plan(plan, info)
        return problem or check_low_rank([(i, m, plan.get("rank", 4)) for i, m in plan["targets"]], info)

    def count(self, plan: dict, info: BackboneInfo) -> int:
        total = 0
        for layer, module in plan["targets"]:
            site = info.sites[(layer, module)]
            total += plan["rank"] * (site.in_features + site.out_features)
            total += nonzeros(plan["density"], site.out_features, site.in_features)
        return total

    def kept_activations(self, plan: dict, info: BackboneInfo) -> dict[tuple, int]:
        return low_rank_kept(plan["targets"], info, lambda t: plan["rank"])

    def describe(self, plan: dict) -> str:
        return f"{super().describe(plan)} r{plan['rank']} +{plan['density']:g} {plan['support']}"

    def apply(self, model, plan: dict, context: BuildContext) -> None:
        for index, (layer, module) in enumerate(plan["targets"]):
            weight = context.linears[(layer, module)].weight
            nnz = nonzeros(plan["density"], *weight.shape)
            scaling = plan.get("alpha", 16.0) / plan["rank"]
            update = SparsePlusLowRank(weight, plan["rank"], nnz, plan.get("support", "random"), scaling, index)
            attach(model, context.info, self.name, (layer, module), update.to(weight.device))
