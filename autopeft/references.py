"""The hand-made reference configurations: the baselines a study is compared with, and the status quo.

Each baseline is a function ``(backbone, limit) -> methods`` registered with :func:`register_baseline`.
Sizes follow the budget where the method has one (the largest bottleneck or prefix length whose count
fits the limit); LoRA keeps its standard rank 8 on query and value, and full fine-tuning trains
everything (the reference point, far above any budget). ``autopeft baselines`` trains them beside a
study; the status quo, the user's own default that every search trains beside its trials, is one of
them (``lora`` by default) or a configuration of the user's, fitted to the budget by
:func:`fit_to_budget`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from autopeft.errors import AutopeftError
from autopeft.methods import METHODS
from autopeft.methods.build import check_config, count_trainable
from autopeft.methods.config import TrialConfig, read_config
from autopeft.models import BackboneInfo

MethodsFn = Callable[[BackboneInfo, int], dict[str, dict]]


@dataclass(frozen=True)
class Baseline:
    """A hand-made configuration.

    Attributes:
        name: short name (``houlsby``).
        label: how plots and tables show it.
        learning_rate: its usual learning rate.
        methods: builds the plans for a backbone and a parameter limit.
        standard: whether ``baselines`` runs it by default (the seed methods' references run when named).
    """

    name: str
    label: str
    learning_rate: float
    methods: MethodsFn
    standard: bool = True

    def config(self, info: BackboneInfo, limit: int, learning_rate: float | None = None) -> TrialConfig:
        """The baseline's configuration on a backbone within ``limit`` trainable parameters (where it has a size).

        Args:
            info: the backbone.
            limit: the budget's parameter limit.
            learning_rate: overrides the baseline's usual learning rate.
        """
        config = TrialConfig(self.methods(info, limit), {"learning_rate": learning_rate or self.learning_rate})
        return check_config(config, info, source=f"baseline {self.name}")


BASELINES: dict[str, Baseline] = {}


def register_baseline(
    name: str, label: str, learning_rate: float, standard: bool = True
) -> Callable[[MethodsFn], MethodsFn]:
    """Decorator adding a baseline.

    Args:
        name: its name on the command line.
        label: its label in plots and tables.
        learning_rate: its usual learning rate.
        standard: run by default (else only when named with ``--only``).
    """

    def wrap(fn: MethodsFn) -> MethodsFn:
        BASELINES[name] = Baseline(name, label, learning_rate, fn, standard)
        return fn

    return wrap


def _largest_fitting(make: Callable[[int], dict[str, dict]], info: BackboneInfo, limit: int, cap: int) -> dict:
    """The plans of the largest size in ``1..cap`` whose count fits ``limit`` (size 1 when none does)."""
    best = make(1)
    for size in range(2, cap + 1):
        plans = make(size)
        if sum(METHODS[name].count(plan, info) for name, plan in plans.items()) > limit:
            break
        best = plans
    return best


@register_baseline("lora", "LoRA r=8 (query, value)", 5e-4)
def lora_query_value(info: BackboneInfo, limit: int) -> dict[str, dict]:
    """LoRA of rank 8 on query and value of every layer (Hu et al., 2021), alpha 16."""
    targets = [[layer, module, 8] for layer in range(info.num_layers) for module in ("query", "value")]
    return {"lora": {"targets": targets, "alpha": 16.0}}


@register_baseline("houlsby", "Houlsby adapter", 1e-3)
def houlsby(info: BackboneInfo, limit: int) -> dict[str, dict]:
    """Serial bottleneck adapters after attention and after the FFN of every layer (Houlsby et al., 2019)."""

    def make(size: int) -> dict[str, dict]:
        targets = [[layer, position, size] for layer in range(info.num_layers) for position in ("attn", "ffn")]
        return {"serial_adapter": {"targets": targets, "activation": "relu"}}

    return _largest_fitting(make, info, limit, info.hidden_size)


@register_baseline("pfeiffer", "Pfeiffer adapter", 1e-3)
def pfeiffer(info: BackboneInfo, limit: int) -> dict[str, dict]:
    """One serial bottleneck adapter after the FFN of every layer (Pfeiffer et al., 2021)."""

    def make(size: int) -> dict[str, dict]:
        return {"serial_adapter": {"targets": [[layer, "ffn", size] for layer in range(info.num_layers)]}}

    return _largest_fitting(make, info, limit, info.hidden_size)


@register_baseline("prefix", "Prefix tuning", 5e-3)
def prefix_tuning(info: BackboneInfo, limit: int) -> dict[str, dict]:
    """Key/value prefixes of one length in every layer (Li & Liang, 2021), without reparameterisation."""

    def make(length: int) -> dict[str, dict]:
        return {"prefix": {"targets": [[layer, length] for layer in range(info.num_layers)]}}

    return _largest_fitting(make, info, limit, 128)


@register_baseline("full", "Full fine-tuning", 2e-5)
def full_finetuning(info: BackboneInfo, limit: int) -> dict[str, dict]:
    """Every backbone weight trains (the reference; not a PEFT method)."""
    return {"full_finetune": {}}


def _every_layer(info: BackboneInfo, modules: tuple[str, ...]) -> list[list]:
    return [[layer, module] for layer in range(info.num_layers) for module in modules]


@register_baseline("side_tuning", "LST side network (w = hidden/12)", 1e-3, standard=False)
def side_network(info: BackboneInfo, limit: int) -> dict[str, dict]:
    """Side tuning fed by every layer, its width the hidden size over 12 (Sung et al., 2022 use 8 on T5)."""
    return {"side_tuning": {"layers": list(range(info.num_layers)), "width": max(1, info.hidden_size // 12)}}


@register_baseline("sparse_plus_lowrank", "LoRA r=8 (q, v) + 0.5% sparse", 5e-4, standard=False)
def sparse_plus_lowrank(info: BackboneInfo, limit: int) -> dict[str, dict]:
    """LoRA r=8 on query and value plus a sparse update of 0.5% of each weight on its largest entries (DSEE)."""
    plan = {"rank": 8, "density": 0.005, "support": "magnitude", "alpha": 16.0}
    return {"sparse_plus_lowrank": {"targets": _every_layer(info, ("query", "value")), **plan}}


@register_baseline("incre_lora", "IncreLoRA (q, v) r2 to 8", 5e-4, standard=False)
def incre_lora(info: BackboneInfo, limit: int) -> dict[str, dict]:
    """Ranks growing from 2 to at most 8 on query and value, two sites a growth every 5% until 70% (IncreLoRA)."""
    plan = {"max_rank": 8, "init_rank": 2, "grow": 2, "interval": 0.05, "until": 0.7, "alpha": 16.0}
    return {"incre_lora": {"targets": _every_layer(info, ("query", "value")), **plan}}


@register_baseline("subspace", "Random subspace d=5000 (q, v)", 1e-3, standard=False)
def random_subspace(info: BackboneInfo, limit: int) -> dict[str, dict]:
    """5,000 numbers projected into every query and value weight (intrinsic dimension, Fastfood projections)."""
    return {"subspace": {"targets": _every_layer(info, ("query", "value")), "dim": 5000, "scale": 1.0, "seed": 0}}


@dataclass(frozen=True)
class StatusQuo:
    """The user's own default configuration, trained beside a search.

    Attributes:
        label: how tables and plots name it (``LoRA r=8 (query, value)``).
        source: what ``--status-quo`` said (a baseline's name, or a file).
        config: the configuration trained (fitted to the budget); ``None`` when no rank of it fits: the search
            runs without a status quo, and says so.
        trainable_params: its trainable count.
        note: what fitting it to the budget changed, or why there is none (``None``: nothing to say).
    """

    label: str
    source: str
    config: TrialConfig | None
    trainable_params: int
    note: str | None = None

    def to_dict(self) -> dict:
        """JSON-able form (stored with its runs)."""
        return {**self.__dict__, "config": self.config.to_dict() if self.config else None}


def fit_to_budget(config: TrialConfig, info: BackboneInfo, limit: int) -> tuple[TrialConfig | None, str | None]:
    """The configuration, or, when it exceeds ``limit``, the same with the largest rank (size) that fits.

    Every size of the plans' ``targets`` (a LoRA rank, an adapter's width, a prefix's length) is capped at
    the same value, the largest that brings the count within the limit.

    Args:
        config: a validated configuration.
        info: the backbone.
        limit: the budget's parameter limit.

    Returns:
        The configuration to train (``None`` when no rank fits), and what was changed (``None``: nothing).
    """
    count = count_trainable(config, info)
    if count <= limit:
        return config, None
    sizes = [t[-1] for plan in config.methods.values() for t in plan.get("targets", []) if isinstance(t[-1], int)]
    for cap in range(max(sizes, default=0) - 1, 0, -1):
        methods = {
            name: {**plan, "targets": [[*t[:-1], min(t[-1], cap)] for t in plan["targets"]]}
            if "targets" in plan
            else plan
            for name, plan in config.methods.items()
        }
        fitted = TrialConfig(methods, config.training)
        fitted_count = count_trainable(fitted, info)
        if fitted_count <= limit:
            note = f"{count:,} parameters exceed the budget's {limit:,}: trained at rank (size) {cap}, {fitted_count:,}"
            return fitted, note
    return None, f"{count:,} parameters exceed the budget's {limit:,} at any rank: the search runs without a status quo"


def resolve_status_quo(source: str, info: BackboneInfo, limit: int) -> StatusQuo:
    """The status quo that ``--status-quo`` names, fitted to the budget.

    Args:
        source: a baseline's name (``lora``), an export folder or a configuration file.
        info: the backbone.
        limit: the budget's parameter limit.
    """
    if source in BASELINES:
        baseline = BASELINES[source]
        config, label = baseline.config(info, 10**15), baseline.label
    elif Path(source).exists():
        config, _ = read_config(source)
        config, label = check_config(config, info, source=f"--status-quo {source}"), f"status quo ({Path(source).name})"
    else:
        known = ", ".join(BASELINES)
        raise AutopeftError(f"--status-quo {source!r}: not a baseline ({known}), an export folder or a config file")
    fitted, note = fit_to_budget(config, info, limit)
    return StatusQuo(label, source, fitted, count_trainable(fitted, info) if fitted else 0, note)
