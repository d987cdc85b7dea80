"""AdaLoRA (Zhang et al., 2023): a rank budget moved during training to the matrices that need it, via peft.

Each adapted matrix starts at ``init_r``; after a warm-up the allocator prunes singular values by
importance until the average rank is ``target_r``, then holds that allocation for the final steps.
The allocator runs after every optimiser step (:meth:`peft.tuners.AdaLoraModel.update_and_allocate`),
and the orthogonality regulariser joins the loss, exactly as peft's own training loop expects.
The trainable count is that of the initial ranks (``init_r * (in + out + 1)`` per matrix): the
parameters exist and train, even where the allocator masks them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from pydantic import Field, PositiveInt

from autopeft.methods.base import BuildContext, PeftMethod, TrainingHook, ValueOf, register_method
from autopeft.methods.lora import check_alpha_dropout, check_low_rank, low_rank_kept, site_names
from autopeft.methods.placement import PlacedSection
from autopeft.models import BackboneInfo
from autopeft.schema import Strict, ValueSpec, distribution, numbers

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution


class AdaLoraSection(PlacedSection):
    """The ``methods.adalora`` section of a space file."""

    init_rank: ValueSpec = Field(description="rank every adapted matrix starts with")
    target_ratio: ValueSpec = Field(0.5, description="average final rank as a fraction of init_rank, in (0, 1]")
    warmup: ValueSpec = Field(0.1, description="fraction of training before any rank is pruned (tinit)")
    final: ValueSpec = Field(0.2, description="fraction of training at the end with the allocation frozen (tfinal)")
    interval: int = Field(1, ge=1, description="steps between two allocations (deltaT)")
    alpha: ValueSpec = Field(16, description="lora_alpha")
    dropout: ValueSpec = Field(0.0, description="dropout on the adapter input")
    orth_reg_weight: float = Field(0.5, ge=0, description="weight of the orthogonality regulariser")


class AdaLoraPlan(Strict):
    """An AdaLoRA configuration."""

    targets: list[tuple[int, str]] = Field(min_length=1, description="[layer, module] adapted")
    init_r: PositiveInt
    target_r: PositiveInt
    warmup: float = Field(ge=0, lt=1)
    final: float = Field(ge=0, lt=1)
    interval: PositiveInt = 1
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    orth_reg_weight: float = Field(0.5, ge=0)


def schedule_steps(plan: dict, total_steps: int) -> tuple[int, int]:
    """``(tinit, tfinal)`` in steps, shortened where needed so that a budgeting phase remains."""
    tinit, tfinal = int(plan["warmup"] * total_steps), int(plan["final"] * total_steps)
    if tinit >= total_steps - tfinal:
        tfinal = max(0, min(tfinal, total_steps - 2))
        tinit = max(0, min(tinit, total_steps - tfinal - 1))
    return tinit, tfinal


def _cost(info: BackboneInfo, site: tuple[int, str], rank: int) -> int:
    """Trainable parameters of AdaLoRA at ``site``: ``P`` (r x in), ``Q`` (out x r) and ``E`` (r)."""
    linear = info.sites[site]
    return rank * (linear.in_features + linear.out_features + 1)


class _RankAllocation(TrainingHook):
    """Runs peft's allocator after each step and adds the orthogonality regulariser to the loss."""

    def __init__(self, tuner, adapter: str, weight: float) -> None:
        self.tuner = tuner
        self.weight = weight
        self.factors = [
            (p, "lora_A" in n)
            for n, p in tuner.model.named_parameters()
            if ("lora_A" in n or "lora_B" in n) and adapter in n
        ]

    def loss_term(self) -> torch.Tensor | None:
        if not self.weight or not self.factors:
            return None
        total = 0.0
        for p, is_a in self.factors:
            gram = p @ p.T if is_a else p.T @ p
            total = total + torch.linalg.matrix_norm(
                gram - torch.eye(gram.shape[0], device=gram.device, dtype=gram.dtype)
            )
        return self.weight * total / len(self.factors)

    def after_step(self, step: int) -> None:
        self.tuner.update_and_allocate(step)

    def report(self) -> dict:
        """The final rank of every adapted matrix (``init_r`` where no allocation happened yet)."""
        config = next(iter(self.tuner.peft_config.values()))
        if not config.rank_pattern:
            return {"adalora_ranks": {}}
        return {"adalora_ranks": {name: int(sum(mask)) for name, mask in config.rank_pattern.items()}}


@register_method
class AdaLora(PeftMethod):
    """AdaLoRA: SVD-form low-rank updates ``P diag(E) Q`` whose ranks are reallocated during training."""

    name = "adalora"
    order = 0
    conflicts = frozenset({"lora"})  # peft trains one of the two LoRA tuners per model
    section = AdaLoraSection
    plan = AdaLoraPlan
    example = {
        "targets": [[0, "value"], [1, "ffn_in"]], "init_r": 4, "target_r": 2, "warmup": 0.1, "final": 0.2,
        "interval": 1, "alpha": 16.0, "dropout": 0.0, "orth_reg_weight": 0.5,
    }  # fmt: skip

    def check(self, section: AdaLoraSection, info: BackboneInfo) -> str | None:
        problem = section.check_placement(info) or check_alpha_dropout(section)
        if problem:
            return problem
        ranks = numbers(section.init_rank)
        if not all(float(r).is_integer() and r >= 1 for r in ranks):
            return f"init_rank: expected whole numbers of at least 1, got {ranks}"
        widest = max(min(s.in_features, s.out_features) for s in info.sites.values())
        if max(ranks) > widest:
            return f"init_rank: rank {max(ranks):g} exceeds the module width {widest}"
        if not all(0 < r <= 1 for r in numbers(section.target_ratio)):
            return f"target_ratio: values must lie in (0, 1], got {numbers(section.target_ratio)}"
        for key in ("warmup", "final"):
            if not all(0 <= v < 1 for v in numbers(getattr(section, key))):
                return f"{key}: values must lie in [0, 1), got {numbers(getattr(section, key))}"
        if max(numbers(section.warmup)) + max(numbers(section.final)) >= 1:
            return "final: warm-up and final phases leave no step for the allocation (warmup + final must be < 1)"
        return None

    def dimensions(self, section: AdaLoraSection, info: BackboneInfo) -> dict[str, BaseDistribution]:
        dims = section.placement_dimensions(self.name, info)
        for key in ("init_rank", "target_ratio", "warmup", "final", "alpha", "dropout"):
            dist = distribution(getattr(section, key))
            if dist is not None:
                dims[f"{self.name}.{key}"] = dist
        return dims

    def decode(self, section: AdaLoraSection, value_of: ValueOf, info: BackboneInfo) -> dict | None:
        targets = [list(site) for site in section.placed_sites(self.name, value_of, info)]
        if not targets:
            return None
        init_r = int(value_of(f"{self.name}.init_rank", section.init_rank))
        ratio = float(value_of(f"{self.name}.target_ratio", section.target_ratio))
        return {
            "targets": targets,
            "init_r": init_r,
            "target_r": max(1, round(ratio * init_r)),
            "warmup": float(value_of(f"{self.name}.warmup", section.warmup)),
            "final": float(value_of(f"{self.name}.final", section.final)),
            "interval": section.interval,
            "alpha": float(value_of(f"{self.name}.alpha", section.alpha)),
            "dropout": float(value_of(f"{self.name}.dropout", section.dropout)),
            "orth_reg_weight": section.orth_reg_weight,
        }

    def check_plan(self, plan: dict, info: BackboneInfo) -> str | None:
        problem = super().check_plan(plan, info)
        if problem:
            return problem
        if plan["target_r"] > plan["init_r"]:
            return f"target_r: {plan['target_r']} exceeds init_r {plan['init_r']}"
        return check_low_rank([(layer, module, plan["init_r"]) for layer, module in plan["targets"]], info)

    def kept_activations(self, plan: dict, info: BackboneInfo) -> dict[tuple, int]:
        return low_rank_kept(plan["targets"], info, lambda t: plan["init_r"], plan.get("dropout", 0.0))

    def count(self, plan: dict, info: BackboneInfo) -> int:
        r = plan["init_r"]
        return sum(
            r * (info.sites[(i, m)].in_features + info.sites[(i, m)].out_features + 1) for i, m in plan["targets"]
        )

    def minimal_count(self, section: AdaLoraSection, info: BackboneInfo) -> int:
        r = int(min(numbers(section.init_rank)))
        options = section.minimal_sites(info)
        return min(sum(_cost(info, site, r) for site in sites) for sites in options)

    def _config(self, plan: dict, info: BackboneInfo, total_steps: int, task_type):
        from peft import AdaLoraConfig

        tinit, tfinal = schedule_steps(plan, max(2, total_steps))
        return AdaLoraConfig(
            task_type=task_type,
            init_r=plan["init_r"],
            target_r=plan["target_r"],
            tinit=tinit,
            tfinal=tfinal,
            deltaT=plan.get("interval", 1),
            total_step=max(2, total_steps),
            lora_alpha=plan["alpha"],
            lora_dropout=plan["dropout"],
            orth_reg_weight=plan["orth_reg_weight"],
            target_modules=sorted(site_names(plan["targets"], info)),
        )

    def peft_config(self, plan: dict, info: BackboneInfo, total_steps: int = 1000):
        from peft import TaskType

        return self._config(plan, info, total_steps, TaskType.SEQ_CLS)

    def apply(self, model, plan: dict, context: BuildContext) -> TrainingHook:
        from peft.tuners.adalora import AdaLoraModel

        config = self._config(plan, context.info, context.total_steps, None)
        tuner = AdaLoraModel(model.base_model, config, self.name)
        return _RankAllocation(tuner, self.name, plan["orth_reg_weight"])
