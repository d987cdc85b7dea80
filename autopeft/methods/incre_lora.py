"""Growing ranks (IncreLoRA, Zhang et al., 2023): low-rank updates that start small and grow where they matter.

Every adapted Linear reserves ``max_rank`` components, pre-allocated and masked: ``scaling * B diag(m) A x``,
``m`` a 0/1 mask with ``init_rank`` ones at first. Every ``interval`` of the training (a fraction of its
steps), until ``until``, the hook scores each site's importance as IncreLoRA does, the sensitivity of its
active components, ``mean |theta * grad theta|`` over their ``A`` rows and ``B`` columns (smoothed over the
steps between growths, ``beta`` 0.85), and gives one more component to each of the ``grow`` most important sites
that still have room. A new component's ``B`` column is still zero (masked components receive no gradient), so
growing leaves the output unchanged. The trainable count is the reserved budget, ``max_rank * (in + out)`` per
site, as the plan reserves it; the ranks reached are kept in the mask buffer (saved with a model) and reported
(``incre_lora_ranks``).
"""

from __future__ import annotations

import torch
from pydantic import Field, PositiveInt, model_validator

from autopeft.methods.base import BuildContext, TrainingHook, register_method
from autopeft.methods.delta import PlacedKnobsMethod, SiteUpdate, at_least, attach, positive, within
from autopeft.methods.lora import check_low_rank, low_rank_kept
from autopeft.methods.placement import PlacedSection
from autopeft.models import BackboneInfo
from autopeft.schema import Strict, ValueSpec, numbers


class IncreLoraSection(PlacedSection):
    """The ``methods.incre_lora`` section of a space file."""

    max_rank: ValueSpec = Field(8, description="components reserved per site: the rank it may grow to")
    init_rank: ValueSpec = Field(1, description="components active at first")
    grow: ValueSpec = Field(2, description="sites that gain one component at each growth")
    interval: ValueSpec = Field(0.05, description="fraction of the training between growths")
    until: ValueSpec = Field(0.7, description="fraction of the training after which ranks stay")
    alpha: ValueSpec = Field(16, description="scaling = alpha / max_rank")


class IncreLoraPlan(Strict):
    """A growing-rank configuration."""

    targets: list[tuple[int, str]] = Field(min_length=1)
    max_rank: PositiveInt = 8
    init_rank: PositiveInt = 1
    grow: PositiveInt = 2
    interval: float = Field(0.05, gt=0, le=1)
    until: float = Field(0.7, gt=0, le=1)
    alpha: float = Field(16.0, gt=0)

    @model_validator(mode="after")
    def _ranks(self) -> IncreLoraPlan:
        if self.init_rank > self.max_rank:
            raise ValueError(f"init_rank {self.init_rank} exceeds max_rank {self.max_rank}")
        return self


class MaskedLowRank(SiteUpdate):
    """``scaling * B diag(mask) A x`` with ``max_rank`` components reserved.

    Args:
        in_features: the Linear's input width.
        out_features: its output width.
        max_rank: components reserved.
        init_rank: components active at first.
        scaling: multiplies the update.
    """

    def __init__(self, in_features: int, out_features: int, max_rank: int, init_rank: int, scaling: float) -> None:
        super().__init__()
        self.lora_A = torch.nn.Parameter(torch.empty(max_rank, in_features))
        torch.nn.init.kaiming_uniform_(self.lora_A, a=5**0.5)
        self.lora_B = torch.nn.Parameter(torch.zeros(out_features, max_rank))
        mask = torch.zeros(max_rank)
        mask[:init_rank] = 1
        self.register_buffer("mask", mask)
        self.scaling = scaling

    @property
    def rank(self) -> int:
        """Components active now."""
        return int(self.mask.sum())

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        inner = (x @ self.lora_A.T.to(x.dtype)) * self.mask.to(x.dtype)
        return inner @ self.lora_B.T.to(x.dtype) * self.scaling

    def sensitivity(self) -> float:
        """Mean ``|theta * grad|`` over the active components (0 before any gradient)."""
        if self.lora_A.grad is None or self.lora_B.grad is None:
            return 0.0
        active = self.mask.bool()
        a = (self.lora_A * self.lora_A.grad)[active].abs()
        b = (self.lora_B * self.lora_B.grad)[:, active].abs()
        return float(torch.cat([a.flatten(), b.flatten()]).mean()) if active.any() else 0.0


class RankGrowth(TrainingHook):
    """Scores each site after every step and grows the most important ones on the plan's schedule.

    Args:
        updates: site name -> its update.
        plan: the method's plan.
        total_steps: the training's steps.
    """

    def __init__(self, updates: dict[str, MaskedLowRank], plan: dict, total_steps: int) -> None:
        self.updates = updates
        self.grow, self.beta = plan["grow"], 0.85
        every = max(1, round(plan["interval"] * total_steps))
        self.events = set(range(every, int(plan["until"] * total_steps) + 1, every))
        self.importance = dict.fromkeys(updates, 0.0)
        self.growths = 0

    def after_step(self, step: int) -> None:
        with torch.no_grad():
            for name, update in self.updates.items():
                score = update.sensitivity()
                self.importance[name] = self.beta * self.importance[name] + (1 - self.beta) * score
            if step not in self.events:
                return
            room = [n for n, u in self.updates.items() if u.rank < u.mask.numel()]
            for name in sorted(room, key=lambda n: -self.importance[n])[: self.grow]:
                update = self.updates[name]
                update.mask[update.rank] = 1
            self.growths += 1

    def report(self) -> dict:
        return {
            "incre_lora_ranks": {name: u.rank for name, u in self.updates.items()},
            "incre_lora_growths": self.growths,
        }


@register_method
class IncreLora(PlacedKnobsMethod):
    """Masked, pre-allocated low-rank updates whose ranks grow by importance during training."""

    name = "incre_lora"
    order = 6
    section = IncreLoraSection
    plan = IncreLoraPlan
    example = {
        "targets": [[0, "value"], [1, "query"], [2, "ffn_in"]],
        "max_rank": 4,
        "init_rank": 1,
        "grow": 1,
        "interval": 0.1,
        "until": 0.8,
        "alpha": 16.0,
    }
    knobs = {
        "max_rank": (int, at_least(1)),
        "init_rank": (int, at_least(1)),
        "grow": (int, at_least(1)),
        "interval": (float, within(0, 1)),
        "until": (float, within(0, 1)),
        "alpha": (float, positive),
    }

    def check(self, section: IncreLoraSection, info: BackboneInfo) -> str | None:
        problem = super().check(section, info)
        if not problem and min(numbers(section.max_rank)) < max(numbers(section.init_rank)):
            problem = "init_rank: every init_rank must be at most the smallest max_rank"
        return problem

    def check_plan(self, plan: dict, info: BackboneInfo) -> str | None:
        problem = super().check_plan(plan, info)
        return problem or check_low_rank([(i, m, plan.get("max_rank", 8)) for i, m in plan["targets"]], info)

    def count(self, plan: dict, info: BackboneInfo) -> int:
        return sum(
            plan["max_rank"] * (info.sites[(i, m)].in_features + info.sites[(i, m)].out_features)
            for i, m in plan["targets"]
        )

    def kept_activations(self, plan: dict, info: BackboneInfo) -> dict[tuple, int]:
        return low_rank_kept(plan["targets"], info, lambda t: 2 * plan["max_rank"])  # A x, and it masked

    def describe(self, plan: dict) -> str:
        return f"{super().describe(plan)} r{plan['init_rank']}->{plan['max_rank']}"

    def apply(self, model, plan: dict, context: BuildContext) -> TrainingHook:
        updates = {}
        for layer, module in plan["targets"]:
            site = context.info.sites[(layer, module)]
            update = MaskedLowRank(
                site.in_features,
                site.out_features,
                plan["max_rank"],
                plan["init_rank"],
                plan["alpha"] / plan["max_rank"],
            )
            attach(model, context.info, self.name, (layer, module), update)
            updates[site.name] = update
        return RankGrowth(updates, plan, context.total_steps)
