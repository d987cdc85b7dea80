"""Training in a random subspace (intrinsic dimension, Li et al., 2018; Aghajanyan et al., 2021): ``d`` numbers.

One trained vector ``theta`` of ``d`` numbers, shared by every adapted Linear: each adds
``delta W = scale * P theta`` to its frozen weight, where ``P`` is a fixed, seeded Fastfood projection (Le et
al., 2013, as the intrinsic-dimension papers use it): ``P = H G Pi H B`` on ``theta`` zero-padded to a power of
two ``n`` at least the weight's size, with ``B`` random signs, ``Pi`` a permutation, ``G`` Gaussian, ``H`` the
Walsh-Hadamard transform, then cut to the weight's ``out x in`` entries and divided by ``n``, so each column of
``P`` has a norm near ``sqrt(size / n)``. Each site draws its own ``B, Pi, G`` from ``seed`` and its place. Nothing
dense of size ``d x size`` is ever stored: the projection's buffers are regenerated from the seed, not saved.
``theta`` starts at zero: the model is unchanged at initialisation. The count is ``d``.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, PositiveInt

from autopeft.methods.base import BuildContext, register_method
from autopeft.methods.delta import PlacedKnobsMethod, SiteUpdate, at_least, attach, positive
from autopeft.methods.placement import PlacedSection
from autopeft.models import BackboneInfo
from autopeft.schema import Strict, ValueSpec


class SubspaceSection(PlacedSection):
    """The ``methods.subspace`` section of a space file."""

    dim: ValueSpec = Field(1000, description="d: the trained numbers, shared by every adapted matrix")
    scale: ValueSpec = Field(1.0, description="multiplies every projected update")
    seed: ValueSpec = Field(0, description="seed of the random projections")


class SubspacePlan(Strict):
    """A random-subspace configuration: the ``[layer, module]`` sites, ``dim``, ``scale`` and ``seed``."""

    targets: list[tuple[int, str]] = Field(min_length=1)
    dim: PositiveInt = 1000
    scale: float = Field(1.0, gt=0)
    seed: int = 0


def hadamard(x: torch.Tensor) -> torch.Tensor:
    """The unnormalised fast Walsh-Hadamard transform of the last dimension (a power of two)."""
    n = x.shape[-1]
    shape = x.shape
    h = 1
    while h < n:
        x = x.reshape(*shape[:-1], n // (2 * h), 2, h)
        x = torch.stack((x[..., 0, :] + x[..., 1, :], x[..., 0, :] - x[..., 1, :]), dim=-2)
        h *= 2
    return x.reshape(shape)


class Fastfood(SiteUpdate):
    """``delta W = scale * Fastfood(theta)`` cut to ``out x in``, added as ``x @ delta W.T``.

    Args:
        theta: the shared trained vector.
        out_features: the weight's rows.
        in_features: its columns.
        scale: multiplies the update.
        seed: the projection's seed.
    """

    def __init__(self, theta: torch.nn.Parameter, out_features: int, in_features: int, scale: float, seed: int):
        super().__init__()
        self.theta = [theta]  # shared: a list, so this module does not own it a second time
        self.shape, self.scale = (out_features, in_features), scale
        self.n = 2 ** math.ceil(math.log2(max(out_features * in_features, theta.numel())))
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("signs", torch.randint(0, 2, (self.n,), generator=generator).float() * 2 - 1, False)
        self.register_buffer("permutation", torch.randperm(self.n, generator=generator), False)
        self.register_buffer("gaussian", torch.randn(self.n, generator=generator), False)

    def weight_delta(self) -> torch.Tensor:
        """The update of the weight, ``out x in``."""
        (theta,) = self.theta
        padded = torch.nn.functional.pad(theta, (0, self.n - theta.numel()))
        projected = hadamard(self.gaussian * hadamard(self.signs * padded)[self.permutation])
        size = self.shape[0] * self.shape[1]
        return (self.scale / self.n) * projected[:size].reshape(self.shape)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight_delta().to(x.dtype))


@register_method
class Subspace(PlacedKnobsMethod):
    """``d`` trained numbers projected into the chosen weight matrices by fixed random Fastfood projections."""

    name = "subspace"
    order = 13
    section = SubspaceSection
    plan = SubspacePlan
    example = {"targets": [[0, "query"], [2, "ffn_in"]], "dim": 64, "scale": 1.0, "seed": 0}
    knobs = {"dim": (int, at_least(1)), "scale": (float, positive), "seed": (int, at_least(0))}

    def count(self, plan: dict, info: BackboneInfo) -> int:
        return int(plan["dim"])

    def describe(self, plan: dict) -> str:
        return f"{super().describe(plan)} d{plan['dim']}"

    def apply(self, model, plan: dict, context: BuildContext) -> None:
        backbone = model.base_model
        theta = torch.nn.Parameter(torch.zeros(plan["dim"]))
        backbone.register_parameter("autopeft_subspace_theta", theta)
        for index, (layer, module) in enumerate(plan["targets"]):
            site = context.info.sites[(layer, module)]
            seed = plan.get("seed", 0) * 1_000_003 + index
            update = Fastfood(theta, site.out_features, site.in_features, plan.get("scale", 1.0), seed)
            attach(model, context.info, self.name, (layer, module), update)
