"""VeRA (Kopiczko et al., 2024): one pair of frozen random matrices shared by every adapted module, via peft.

Each adapted Linear trains two scaling vectors only: ``lambda_d`` (``r`` entries, scaling the
shared down-projection) and ``lambda_b`` (``out_features`` entries, scaling the shared
up-projection), so a site costs ``r + out_features`` parameters whatever its input width, and the
rank is one value for the whole model (the shared matrices are sized for the widest module and
sliced). ``lambda_b`` starts at zero: the backbone is unchanged at initialisation. The random
matrices come from peft's fixed ``projection_prng_key`` and are saved with an adapter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, PositiveInt

from autopeft.methods.base import BuildContext, PeftMethod, ValueOf, register_method
from autopeft.methods.lora import check_sites, site_names
from autopeft.methods.placement import PlacedSection
from autopeft.models import BackboneInfo
from autopeft.schema import Strict, ValueSpec, all_numbers, distribution, numbers

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution


class VeraSection(PlacedSection):
    """The ``methods.vera`` section of a space file."""

    rank: ValueSpec = Field(256, description="rank of the shared random matrices (one for the whole model)")
    d_initial: ValueSpec = Field(0.1, description="initial value of every lambda_d entry")
    dropout: ValueSpec = Field(0.0, description="dropout on the VeRA input")


class VeraPlan(Strict):
    """A VeRA configuration: the ``[layer, module]`` sites, the shared rank, ``d_initial`` and dropout."""

    targets: list[tuple[int, str]] = Field(min_length=1)
    rank: PositiveInt = 256
    d_initial: float = Field(0.1, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)


@register_method
class Vera(PeftMethod):
    """Vector-based random-matrix adaptation: two trained vectors per adapted module."""

    name = "vera"
    order = 3
    section = VeraSection
    plan = VeraPlan
    example = {"targets": [[0, "query"], [1, "ffn_in"], [2, "ffn_out"]], "rank": 16, "d_initial": 0.1, "dropout": 0.0}
    conflicts = frozenset({"lora", "adalora", "ia3"})  # peft wraps a Linear with one tuner type

    def check(self, section: VeraSection, info: BackboneInfo) -> str | None:
        problem = section.check_placement(info)
        for key in ("rank", "d_initial", "dropout"):
            values = numbers(getattr(section, key))
            if not problem and (not all_numbers(getattr(section, key)) or min(values) < 0):
                problem = f"{key}: non-negative numbers are expected, got {values}"
        if not problem and (min(numbers(section.rank)) < 1 or max(numbers(section.dropout)) >= 1):
            problem = "rank: at least 1, and dropout below 1, are expected"
        return problem

    def dimensions(self, section: VeraSection, info: BackboneInfo) -> dict[str, BaseDistribution]:
        dims = section.placement_dimensions(self.name, info)
        for key in ("rank", "d_initial", "dropout"):
            dist = distribution(getattr(section, key))
            if dist is not None:
                dims[f"{self.name}.{key}"] = dist
        return dims

    def decode(self, section: VeraSection, value_of: ValueOf, info: BackboneInfo) -> dict | None:
        targets = section.placed_sites(self.name, value_of, info)
        if not targets:
            return None
        return {
            "targets": [list(t) for t in targets],
            "rank": int(value_of(f"{self.name}.rank", section.rank)),
            "d_initial": float(value_of(f"{self.name}.d_initial", section.d_initial)),
            "dropout": float(value_of(f"{self.name}.dropout", section.dropout)),
        }

    def check_plan(self, plan: dict, info: BackboneInfo) -> str | None:
        return super().check_plan(plan, info) or check_sites(plan["targets"], info)

    def count(self, plan: dict, info: BackboneInfo) -> int:
        return sum(plan["rank"] + info.sites[(layer, module)].out_features for layer, module in plan["targets"])

    def minimal_count(self, section: VeraSection, info: BackboneInfo) -> int:
        rank = int(min(numbers(section.rank)))
        return min(sum(rank + info.sites[s].out_features for s in sites) for sites in section.minimal_sites(info))

    def describe(self, plan: dict) -> str:
        return f"{super().describe(plan)} r{plan['rank']}"

    def _config(self, plan: dict, info: BackboneInfo, task_type):
        from peft import VeraConfig

        return VeraConfig(
            task_type=task_type,
            r=plan["rank"],
            target_modules=sorted(site_names(plan["targets"], info)),
            d_initial=plan["d_initial"],
            vera_dropout=plan["dropout"],
        )

    def peft_config(self, plan: dict, info: BackboneInfo, total_steps: int = 1000):
        from peft import TaskType

        return self._config(plan, info, TaskType.SEQ_CLS)

    def apply(self, model, plan: dict, context: BuildContext) -> None:
        from peft import VeraModel

        # peft's injection helper refuses VeRA (its random matrices are state of the tuner): the tuner
        # itself wraps the backbone's Linear modules in place, each of which keeps the shared matrices.
        VeraModel(model.base_model, self._config(plan, context.info, None), self.name)
