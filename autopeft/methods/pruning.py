"""Pruning of the frozen backbone's weights on a schedule, searched beside the adapters (after DSEE and PST).

A plan sets a *target* sparsity, a *granularity* (``unstructured``; ``N:M`` semi-structured, N kept
in every group of M consecutive inputs; ``heads``; FFN ``neurons``), a *criterion* (``magnitude``
``|w|``; ``taylor``, the first-order saliency ``|w * dL/dw|`` summed over steps; ``movement``,
``-w * dL/dw`` summed, which keeps the weights the loss would push away from zero; ``flap`` (An et
al., 2024), the fluctuation of the weight's input feature times its square, ``Var(x_j) * w_ij^2``,
whose sum over a column is FLAP's score of input channel j; ``pst`` (Li et al., 2022), magnitude
plus a rank-8 estimate of movement, ``|w| / mean|w| + M_r / mean|M_r|`` with ``M_r`` the best rank-8
approximation of the summed movement score) and a *schedule*
(``one_shot`` at ``start``; ``linear`` or ``cubic`` (Zhu & Gupta, 2017) from ``start`` to ``end``,
in ``events`` pruning steps), ``start``/``end`` being fractions of training.

Masks are real: pruned weights (and, for heads and neurons, their biases) are set to exactly zero
in place, so the sparsity reported is measured from the weights. Masks only grow. The data-aware
criteria need the frozen weights' gradients while pruning is under way: those weights then take
part in backward (costing time), but never in the optimiser. A one-shot prune at step 0 has no
gradients yet and uses magnitudes.

Sparsity is always stated over one set: every Linear weight matrix inside the encoder layers
(``target_sparsity`` from the plan, exact before training; ``sparsity`` measured after). For
``heads``/``neurons`` the plan's ``target`` is the fraction of heads/neurons removed per layer; for
``N:M`` it is ``1 - N/M``.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from pydantic import Field, PositiveInt

from autopeft.methods.base import BuildContext, MethodSection, PeftMethod, TrainingHook, ValueOf, register_method
from autopeft.methods.placement import check_choices, check_layers, layer_indices
from autopeft.models import BackboneInfo
from autopeft.schema import Strict, ValueSpec, all_numbers, distribution, numbers

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

CRITERIA = ("magnitude", "taylor", "movement", "flap", "pst")
GRADIENT_CRITERIA = ("taylor", "movement", "pst")
"""The criteria that read the frozen weights' gradients (``flap`` reads the layers' inputs instead)."""
PST_RANK = 8
"""The rank of PST's estimate of the movement score."""
SCHEDULES = ("one_shot", "linear", "cubic")
STRUCTURED = {"heads": ("query", "key", "value", "attn_out"), "neurons": ("ffn_in", "ffn_out")}
_N_M = re.compile(r"^(\d+):(\d+)$")


class PruningSection(MethodSection):
    """The ``methods.pruning`` section of a space file."""

    target: ValueSpec = Field(0.5, description="sparsity in [0, 1): of the chosen matrices, or of heads/neurons")
    granularity: ValueSpec = Field("unstructured", description="unstructured, N:M (e.g. 2:4), heads or neurons")
    criterion: ValueSpec = Field("magnitude", description=f"importance: {', '.join(CRITERIA)}")
    schedule: ValueSpec = Field("cubic", description=f"how sparsity grows: {', '.join(SCHEDULES)}")
    start: ValueSpec = Field(0.0, description="fraction of training at which pruning starts")
    end: ValueSpec = Field(0.8, description="fraction of training at which the target is reached")
    events: PositiveInt = Field(10, description="pruning steps of a gradual (linear, cubic) schedule")
    layers: Literal["all"] | list[int] = Field("all", description="layers pruned")
    modules: list[str] = Field(
        ["query", "key", "value", "attn_out", "ffn_in", "ffn_out"],
        min_length=1,
        description="matrices pruned by unstructured and N:M granularities (heads/neurons imply theirs)",
    )


class PruningPlan(Strict):
    """A pruning configuration."""

    target: float = Field(ge=0, lt=1)
    granularity: str = "unstructured"
    criterion: Literal["magnitude", "taylor", "movement", "flap", "pst"] = "magnitude"
    schedule: Literal["one_shot", "linear", "cubic"] = "cubic"
    start: float = Field(0.0, ge=0, le=1)
    end: float = Field(0.8, ge=0, le=1)
    events: PositiveInt = 10
    layers: list[int] = Field(min_length=1)
    modules: list[str] = Field(min_length=1)


def n_m(granularity: str) -> tuple[int, int] | None:
    """``(N, M)`` of an ``N:M`` granularity, else ``None``."""
    match = _N_M.match(granularity)
    return (int(match.group(1)), int(match.group(2))) if match else None


def schedule_fraction(schedule: str, t: float, start: float, end: float) -> float:
    """Fraction of the final sparsity reached at training fraction ``t``.

    Args:
        schedule: ``one_shot``, ``linear`` or ``cubic``.
        t: fraction of training done.
        start: when pruning starts.
        end: when it reaches the target.
    """
    if t < start:
        return 0.0
    if schedule == "one_shot" or end <= start:
        return 1.0
    progress = min(1.0, (t - start) / (end - start))
    return progress if schedule == "linear" else 1.0 - (1.0 - progress) ** 3


def event_steps(plan: dict, total_steps: int) -> list[int]:
    """Steps after which masks are updated (0: before the first step).

    Args:
        plan: the pruning plan.
        total_steps: optimiser steps of the training.
    """
    start, end = plan["start"] * total_steps, plan["end"] * total_steps
    if plan["schedule"] == "one_shot" or end <= start:
        return [min(total_steps, round(start))]
    n = plan["events"]
    return sorted({min(total_steps, max(1, round(start + k * (end - start) / n))) for k in range(1, n + 1)})


def _pruned_sites(plan: dict) -> list[tuple[int, str]]:
    modules = STRUCTURED.get(plan["granularity"], plan["modules"])
    return [(layer, module) for layer in plan["layers"] for module in modules]


def target_zeros(plan: dict, info: BackboneInfo) -> int:
    """Exact number of weights the plan sets to zero at its target."""
    granularity, sites = plan["granularity"], _pruned_sites(plan)
    hidden = info.hidden_size
    if granularity == "heads":
        removed = round(plan["target"] * info.num_heads)
        return len(plan["layers"]) * removed * (hidden // info.num_heads) * 4 * hidden
    if granularity == "neurons":
        inner = info.sites[(plan["layers"][0], "ffn_in")].out_features
        return len(plan["layers"]) * round(plan["target"] * inner) * 2 * hidden
    total = 0
    for site in sites:
        linear = info.sites[site]
        numel = linear.in_features * linear.out_features
        pattern = n_m(granularity)
        total += numel // pattern[1] * (pattern[1] - pattern[0]) if pattern else math.floor(plan["target"] * numel)
    return total


def encoder_weights(info: BackboneInfo) -> int:
    """Weights of every Linear matrix inside the encoder layers (the set sparsity is stated over)."""
    return sum(s.in_features * s.out_features for s in info.sites.values())


class Pruner(TrainingHook):
    """Applies a pruning plan during training; its masks are exact zeros in the frozen weights.

    Args:
        plan: the pruning plan.
        linears: the backbone's encoder-layer Linear modules.
        info: the backbone.
        total_steps: optimiser steps of the training.
    """

    def __init__(self, plan: dict, linears: dict, info: BackboneInfo, total_steps: int) -> None:
        self.plan = plan
        self.info = info
        self.total_steps = total_steps
        self.linears = {site: linears[site] for site in _pruned_sites(plan)}
        self.events = event_steps(plan, total_steps)
        self.data_aware = plan["criterion"] != "magnitude"
        self.gradients = plan["criterion"] in GRADIENT_CRITERIA
        self.scores: dict[tuple[int, str], torch.Tensor] = {}
        self.inputs: dict[tuple[int, str], list[torch.Tensor]] = {}  # flap: per input feature, sum, sum of squares, n
        self._hooks: list = []
        self.masks: dict[str, torch.Tensor] = {}

    # -- training -------------------------------------------------------------------------------
    def on_train_begin(self) -> None:
        if 0 in self.events:
            self._prune_at(0)
        later = any(e > 0 for e in self.events)
        self._track_gradients(self.gradients and later)
        if self.plan["criterion"] == "flap" and later:
            self._hooks = [
                linear.register_forward_pre_hook(self._input_statistics(site)) for site, linear in self.linears.items()
            ]

    def _input_statistics(self, site: tuple[int, str]):
        """A hook that adds a training batch's inputs of one Linear to its per-feature sums (FLAP's fluctuation)."""

        def record(module: torch.nn.Module, args: tuple) -> None:
            if not module.training:
                return  # rung evaluations score the selection examples: they must not steer the masks
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])
            sums = self.inputs.setdefault(site, [torch.zeros_like(x[0]), torch.zeros_like(x[0]), 0])
            sums[0] += x.sum(0)
            sums[1] += (x * x).sum(0)
            sums[2] += x.shape[0]

        return record

    def _track_gradients(self, on: bool) -> None:
        for linear in self.linears.values():
            linear.weight.requires_grad_(on)
            if not on:
                linear.weight.grad = None

    def after_step(self, step: int) -> None:
        if self.gradients and self.events and step <= self.events[-1]:
            for site, linear in self.linears.items():
                grad = linear.weight.grad
                if grad is None:
                    continue
                saliency = (linear.weight.detach() * grad).float()
                saliency = saliency.abs() if self.plan["criterion"] == "taylor" else -saliency  # movement, pst
                self.scores[site] = self.scores.get(site, 0) + saliency
                linear.weight.grad = None
        if step in self.events:
            self._prune_at(step)
            if step == self.events[-1]:
                self._track_gradients(False)
                for hook in self._hooks:
                    hook.remove()
                self._hooks = []

    def _prune_at(self, step: int) -> None:
        """Prune as the schedule says at ``step``; the last event reaches the target exactly, whatever
        the rounding of steps did (a short training may put a one-shot prune at step 0)."""
        plan = self.plan
        last = step == self.events[-1]
        self.prune(
            1.0 if last else schedule_fraction(plan["schedule"], step / self.total_steps, plan["start"], plan["end"])
        )

    # -- masks ----------------------------------------------------------------------------------
    def _score(self, site: tuple[int, str]) -> torch.Tensor:
        weight = self.linears[site].weight.detach()
        criterion, magnitude = self.plan["criterion"], weight.abs().float()
        score = None  # without data yet (a one-shot prune at step 0): magnitudes
        if criterion == "flap" and site in self.inputs:
            total, squares, n = self.inputs[site]
            fluctuation = (squares / n - (total / n) ** 2).clamp_min(0)  # Var(x_j) over the training tokens seen
            score = fluctuation[None, :] * magnitude**2
        elif criterion == "pst" and site in self.scores:
            movement = self.scores[site]
            with torch.random.fork_rng(devices=[movement.device] if movement.is_cuda else []):
                torch.manual_seed(0)  # the randomised SVD draws from its own stream: training's stays as it was
                u, sigma, v = torch.svd_lowrank(movement, q=min(PST_RANK, *movement.shape))
            estimate = (u * sigma) @ v.T
            score = magnitude / magnitude.mean().clamp_min(1e-12) + estimate / estimate.abs().mean().clamp_min(1e-12)
        elif criterion in ("taylor", "movement") and site in self.scores:
            score = self.scores[site].clone()
        score = magnitude if score is None else score
        return score.masked_fill(weight == 0, -math.inf)  # pruned stays pruned

    @torch.no_grad()
    def prune(self, fraction: float) -> None:
        """Prune to ``fraction`` of the plan's final sparsity.

        Args:
            fraction: in [0, 1].
        """
        if fraction <= 0:
            return
        granularity = self.plan["granularity"]
        if granularity in STRUCTURED:
            self._prune_units(fraction)
            return
        pattern = n_m(granularity)
        for site, linear in self.linears.items():
            score = self._score(site)
            if pattern is None:
                k = math.floor(fraction * math.floor(self.plan["target"] * score.numel()))
                keep = torch.ones(score.numel(), dtype=torch.bool, device=score.device)
                keep[torch.argsort(score.flatten())[:k]] = False
                keep = keep.view_as(score)
            else:
                keep = self._n_m_mask(score, *pattern, fraction)
            self._apply(linear, "weight", keep)

    @staticmethod
    def _n_m_mask(score: torch.Tensor, n: int, m: int, fraction: float) -> torch.Tensor:
        groups = score.reshape(-1, m)
        order = torch.argsort(groups, dim=1)
        drop = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, order[:, : m - n], True)
        cost = torch.where(drop, groups, torch.zeros_like(groups)).sum(1)  # -inf for groups already pruned
        chosen = torch.argsort(cost)[: math.floor(fraction * len(groups))]
        keep = torch.ones_like(groups, dtype=torch.bool)
        keep[chosen] = ~drop[chosen]
        return keep.view_as(score)

    def _prune_units(self, fraction: float) -> None:
        """Remove whole heads (rows of query/key/value, columns of attn_out) or FFN neurons."""
        heads = self.plan["granularity"] == "heads"
        for layer in self.plan["layers"]:
            rows = [m for m in STRUCTURED[self.plan["granularity"]] if m != ("attn_out" if heads else "ffn_out")]
            column = "attn_out" if heads else "ffn_out"
            units = self.info.num_heads if heads else self.linears[(layer, "ffn_in")].out_features
            width = self.linears[(layer, rows[0])].out_features // units
            score = sum(self._score((layer, m)).reshape(units, -1).sum(1) for m in rows)
            score = score + self._score((layer, column)).reshape(-1, units, width).transpose(0, 1).reshape(
                units, -1
            ).sum(1)
            k = math.floor(fraction * round(self.plan["target"] * units))
            keep_unit = torch.ones(units, dtype=torch.bool, device=score.device)
            keep_unit[torch.argsort(score)[:k]] = False
            keep_rows = keep_unit.repeat_interleave(width)
            for m in rows:
                linear = self.linears[(layer, m)]
                self._apply(linear, "weight", keep_rows[:, None].expand_as(linear.weight))
                if linear.bias is not None:
                    self._apply(linear, "bias", keep_rows)
            linear = self.linears[(layer, column)]
            self._apply(linear, "weight", keep_rows[None, :].expand_as(linear.weight))

    def _apply(self, linear: torch.nn.Linear, kind: str, keep: torch.Tensor) -> None:
        tensor = getattr(linear, kind)
        site = next(s for s, m in self.linears.items() if m is linear)
        key = f"{self.info.sites[site].name}.{kind}"
        previous = self.masks.get(key)
        keep = keep if previous is None else keep & previous
        self.masks[key] = keep.contiguous()
        tensor.data.mul_(keep.to(tensor.dtype))

    def mask_arrays(self) -> dict[str, np.ndarray]:
        """The masks (True: kept), by parameter path relative to the backbone, as numpy arrays."""
        return {key: mask.cpu().numpy() for key, mask in self.masks.items()}


@register_method
class Pruning(PeftMethod):
    """Sparsity of the frozen backbone, on a schedule (adds no trainable parameter)."""

    name = "pruning"
    order = 20
    section = PruningSection
    plan = PruningPlan
    example = {
        "target": 0.5,
        "granularity": "unstructured",
        "schedule": "one_shot",
        "layers": [0, 1],
        "modules": ["ffn_in"],
    }
    adds_modules = False
    writes_masks = True
    not_in_peft = "pruning masks of the frozen backbone (written to masks.npz)"

    def describe(self, plan: dict) -> str:
        return f"prune {plan['target']:.0%} {plan['granularity']} {plan['criterion']} {plan['schedule']}"

    _VALUES = {"criterion": CRITERIA, "schedule": SCHEDULES}
    dimensions_keys = ("target", "granularity", "criterion", "schedule", "start", "end")

    def check(self, section: PruningSection, info: BackboneInfo) -> str | None:
        for key, allowed in self._VALUES.items():
            problem = check_choices(key, list(map(str, numbers(getattr(section, key)))), allowed, "known")
            if problem:
                return problem
        targets = numbers(section.target)
        if not all_numbers(section.target) or not all(0 <= v < 1 for v in targets):
            return f"target: sparsity must lie in [0, 1), got {targets}"
        for key in ("start", "end"):
            values = numbers(getattr(section, key))
            if not all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in values):
                return f"{key}: a fraction of training in [0, 1] is expected, got {values}"
        gradual = any(s != "one_shot" for s in numbers(section.schedule))
        if gradual and min(numbers(section.end)) <= max(numbers(section.start)):
            return (
                f"end: the schedule ends ({min(numbers(section.end)):g}) before or when it starts "
                f"({max(numbers(section.start)):g}); end must be after start"
            )
        problem = check_layers(section.layers, info)
        what = f"a module of this {info.model_type} model"
        problem = problem or check_choices("modules", section.modules, info.modules, what)
        for granularity in map(str, numbers(section.granularity)):
            problem = problem or self._check_granularity(granularity, section.modules, info)
        return problem

    @staticmethod
    def _check_granularity(granularity: str, modules: list[str], info: BackboneInfo) -> str | None:
        pattern = n_m(granularity)
        if granularity not in ("unstructured", *STRUCTURED) and pattern is None:
            return (
                f"granularity: {granularity!r} is not known; allowed: unstructured, N:M (such as 2:4), heads, neurons"
            )
        if pattern is not None:
            n, m = pattern
            if not 0 < n < m:
                return f"granularity: {granularity!r} must keep N of M with 0 < N < M"
            for module in modules:
                if info.sites[(0, module)].in_features % m:
                    return (
                        f"granularity: {module} has {info.sites[(0, module)].in_features} inputs, not a multiple of {m}"
                    )
        missing = [m for m in STRUCTURED.get(granularity, ()) if m not in info.modules]
        if missing:
            return f"granularity: {granularity} pruning needs the {missing[0]} module, which this model lacks"
        return None

    def dimensions(self, section: PruningSection, info: BackboneInfo) -> dict[str, BaseDistribution]:
        dims = {}
        for key in self.dimensions_keys:
            dist = distribution(getattr(section, key))
            if dist is not None:
                dims[f"{self.name}.{key}"] = dist
        return dims

    def decode(self, section: PruningSection, value_of: ValueOf, info: BackboneInfo) -> dict | None:
        values = {k: value_of(f"{self.name}.{k}", getattr(section, k)) for k in self.dimensions_keys}
        granularity = str(values["granularity"])
        pattern = n_m(granularity)
        target = 1 - pattern[0] / pattern[1] if pattern else float(values["target"])
        if target <= 0:
            return None
        return {
            "target": target,
            "granularity": granularity,
            "criterion": str(values["criterion"]),
            "schedule": str(values["schedule"]),
            "start": float(values["start"]),
            "end": float(values["end"]),
            "events": section.events,
            "layers": layer_indices(section.layers, info),
            "modules": list(section.modules),
        }

    def check_plan(self, plan: dict, info: BackboneInfo) -> str | None:
        problem = super().check_plan(plan, info)
        if problem:
            return problem
        plan = self.plan.model_validate(plan).model_dump()  # omitted keys at their defaults
        if plan["schedule"] != "one_shot" and plan.get("end", 0.8) <= plan.get("start", 0.0):
            return f"end: the schedule ends ({plan['end']:g}) before or when it starts ({plan['start']:g})"
        what = f"a module of this {info.model_type} model"
        return (
            check_layers(plan["layers"], info)
            or check_choices("modules", plan["modules"], info.modules, what)
            or self._check_granularity(plan["granularity"], plan["modules"], info)
        )

    def gradient_sites(self, plan: dict, info: BackboneInfo) -> list[tuple[int, str]]:
        return []  # it trains nothing (gradient criteria read the frozen weights' gradients on scoring steps only)

    def count(self, plan: dict, info: BackboneInfo) -> int:
        return 0

    def minimal_count(self, section: PruningSection, info: BackboneInfo) -> int:
        return 0

    def target_sparsity(self, plan: dict, info: BackboneInfo) -> float:
        return target_zeros(plan, info) / encoder_weights(info)

    def apply(self, model: torch.nn.Module, plan: dict, context: BuildContext) -> Pruner:
        return Pruner(plan, context.linears, context.info, context.total_steps)
