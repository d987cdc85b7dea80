"""Search spaces: a YAML file, validated, bound to a backbone, and turned into Optuna dimensions.

The flow is ``space file -> SpaceFile (pydantic) -> SearchSpace (bound to a BackboneInfo)``; a
sampled ``params`` dict decodes into a :class:`TrialConfig` whose trainable-parameter count is known
exactly before anything is built.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from pydantic import BaseModel, Field, ValidationError, field_validator

from autopeft.errors import ConfigError
from autopeft.methods import base as method_base
from autopeft.methods.build import conflicting_pairs, count_trainable, target_sparsity
from autopeft.methods.config import TrialConfig
from autopeft.methods.placement import placement_axis
from autopeft.models import BackboneInfo
from autopeft.schema import Strict, ValueSpec, distribution, first_error, fixed_value, numbers, read_model_file

_EMPTY = 2**62  # repair score of a configuration that places no module (exact integer arithmetic)
SPACES_DIR = Path(__file__).resolve().parents[2] / "search_spaces"


class TrainingSection(Strict):
    """The ``training`` section: optimisation knobs searched alongside the adapters."""

    learning_rate: ValueSpec = Field(1e-3, description="AdamW learning rate")


class SpaceFile(Strict):
    """A whole space file."""

    name: str = Field(description="short name of the space")
    description: str = Field("", description="what the space is for")
    methods: dict[str, Any] = Field(description="PEFT methods in play, by name")

    @field_validator("methods")
    @classmethod
    def _some_method(cls, methods: dict[str, Any]) -> dict[str, Any]:
        if not methods:
            raise ValueError("name at least one method")
        return methods

    training: TrainingSection = Field(default_factory=TrainingSection)
    exclusive: list[list[str]] = Field(
        default_factory=list,
        description="groups of methods of which at most one is on (one categorical dimension per group)",
    )


def resolve_space_path(space: str | Path) -> Path:
    """A space file path, or the name of a shipped space (``default`` -> ``search_spaces/default.yaml``).

    Args:
        space: file path or shipped space name.
    """
    path = Path(space)
    if path.is_file():
        return path
    shipped = SPACES_DIR / f"{space}.yaml"
    if shipped.is_file() and path.suffix == "":
        return shipped
    raise ConfigError(f"space file {str(space)!r} does not exist")


def load_space_file(space: str | Path) -> tuple[Path, SpaceFile, dict[str, BaseModel]]:
    """Read and validate a space file (YAML, ``safe_load`` only).

    Args:
        space: file path or shipped space name.

    Returns:
        The path, the parsed file, and each method's parsed section.
    """
    import autopeft.methods  # noqa: F401  (registers the built-in methods)

    path = resolve_space_path(space)
    parsed = read_model_file(path, SpaceFile, "name, methods, training")
    sections = {}
    for name, body in parsed.methods.items():
        if name not in method_base.METHODS:
            raise ConfigError(
                f"{path}: methods.{name}: unknown method; allowed: {', '.join(sorted(method_base.METHODS))}"
            )
        try:
            sections[name] = method_base.METHODS[name].section.model_validate(body)
        except ValidationError as exc:
            raise ConfigError(f"{path}: {first_error(exc, f'methods.{name}')}") from None
    return path, parsed, sections


CACHE_ENTRIES = 4096
"""Entries a sampler's per-configuration caches keep (canonical values, model features): many times what one
proposal reads (its pool of 256 candidates and the trials so far), a few MB. Larger bounds held up to 150 MB by
trial 300 (``bench/long_search.py``)."""


class LruCache(OrderedDict):
    """A dict that keeps its ``maxsize`` most recently used entries.

    Args:
        maxsize: entries kept.
    """

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self.maxsize = maxsize

    def get(self, key, default=None):
        if key not in self:
            return default
        self.move_to_end(key)
        return self[key]

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.maxsize:
            self.popitem(last=False)


@dataclass
class SearchSpace:
    """A space file bound to a backbone: its dimensions, decoding, exact counting and repair.

    Attributes:
        path: the space file.
        spec: the parsed file.
        sections: parsed section of each method in play.
        info: the backbone.
        dimensions: searched dimensions (name -> Optuna distribution), in a fixed order.
        memory_cap: ``(config -> predicted peak bytes, the most allowed)`` under ``--memory-budget``: a
            configuration over it is as infeasible as one over the parameter budget (:meth:`cap_memory`).
    """

    path: Path
    spec: SpaceFile
    sections: dict[str, BaseModel]
    info: BackboneInfo
    dimensions: dict[str, BaseDistribution] = field(default_factory=dict)
    memory_cap: tuple[Callable[[TrialConfig], int], int] | None = field(default=None, repr=False, compare=False)
    _canonical_cache: LruCache = field(default_factory=lambda: LruCache(CACHE_ENTRIES), repr=False, compare=False)

    @classmethod
    def load(cls, space: str | Path, info: BackboneInfo) -> SearchSpace:
        """Load a space file and bind it to a backbone, validating module names, layers and sizes.

        Args:
            space: file path or shipped space name.
            info: the backbone the search runs on.
        """
        path, spec, sections = load_space_file(space)
        sections = {name: section for name, section in sections.items() if section.enabled is not False}
        if not sections:
            raise ConfigError(f"{path}: methods: every method has enabled: false; switch at least one on")
        for name, section in sections.items():
            problem = method_base.METHODS[name].check(section, info)
            if problem:
                raise ConfigError(f"{path}: methods.{name}.{problem}")
        problem = _check_groups(spec, sections)
        if problem:
            raise ConfigError(f"{path}: {problem}")
        lr = numbers(spec.training.learning_rate)
        if min(lr) <= 0:
            raise ConfigError(f"{path}: training.learning_rate: values must be positive, got {lr}")
        dims: dict[str, BaseDistribution] = {}
        grouped = {name for group in spec.exclusive for name in group}
        for group in spec.exclusive:
            optional = all(sections[name].enabled == "searched" for name in group)
            dims[_group_dimension(group)] = CategoricalDistribution([*group, *(["none"] if optional else [])])
        for name, section in sections.items():
            if section.enabled == "searched" and name not in grouped:
                dims[f"{name}.enabled"] = CategoricalDistribution([False, True])
        for name, section in sections.items():
            dims.update(method_base.METHODS[name].dimensions(section, info))
        lr_dist = distribution(spec.training.learning_rate)
        if lr_dist is not None:
            dims["train.learning_rate"] = lr_dist
        return cls(path=path, spec=spec, sections=sections, info=info, dimensions=dims)

    @property
    def name(self) -> str:
        """The space's name."""
        return self.spec.name

    # -- decoding and counting ------------------------------------------------------------------
    def decode(self, params: dict[str, Any]) -> TrialConfig | None:
        """The configuration of sampled values, or ``None`` when it places no PEFT module.

        Args:
            params: a value for every searched dimension.
        """

        def value_of(name: str, spec: Any) -> Any:
            return params[name] if name in self.dimensions else fixed_value(spec)

        plans = {}
        for name, section in self.sections.items():
            if not self._enabled(name, params):
                continue
            plan = method_base.METHODS[name].decode(section, value_of, self.info)
            if plan is not None:
                plans[name] = plan
        if not any(method_base.METHODS[name].adds_modules for name in plans):
            return None
        lr = float(value_of("train.learning_rate", self.spec.training.learning_rate))
        return TrialConfig(methods=plans, training={"learning_rate": lr})

    def _enabled(self, name: str, params: dict[str, Any]) -> bool:
        """Whether method ``name`` is on in these values (its ``enabled`` switch, or its group's choice)."""
        for group in self.spec.exclusive:
            if name in group:
                return params.get(_group_dimension(group), group[0]) == name
        if self.sections[name].enabled == "searched":
            return bool(params[f"{name}.enabled"])
        return bool(self.sections[name].enabled)

    def target_sparsity(self, config: TrialConfig) -> float:
        """Fraction of the encoder-layer Linear weights the configuration prunes (exact, before training).

        Args:
            config: a decoded configuration.
        """
        return target_sparsity(config, self.info)

    def count(self, config: TrialConfig) -> int:
        """Exact trainable parameters of a configuration's PEFT modules (head excluded).

        Args:
            config: a decoded configuration.
        """
        return count_trainable(config, self.info)

    def count_params(self, params: dict[str, Any]) -> int | None:
        """Trainable parameters of sampled values, or ``None`` when they place nothing."""
        config = self.decode(params)
        return None if config is None else self.count(config)

    def minimal_count(self) -> int:
        """The fewest trainable parameters any configuration of this space can have.

        Methods always on must all be placed; otherwise one method (the cheapest that adds
        modules) is enough. A group without a ``none`` choice places its cheapest member.
        """
        methods = method_base.METHODS
        cost = {name: methods[name].minimal_count(section, self.info) for name, section in self.sections.items()}
        adds = {name for name in self.sections if methods[name].adds_modules}
        grouped = {name for group in self.spec.exclusive for name in group}
        forced = [name for name, sec in self.sections.items() if sec.enabled is True and name not in grouped]
        forced_groups = [g for g in self.spec.exclusive if not all(self.sections[n].enabled == "searched" for n in g)]
        total = sum(cost[name] for name in forced) + sum(min(cost[n] for n in g) for g in forced_groups)
        if any(name in adds for name in forced) or any(all(n in adds for n in g) for g in forced_groups):
            return total
        return total + min(cost[name] for name in adds)

    def covers(self, params: dict[str, Any]) -> bool:
        """Whether the values name every searched dimension (a trial whose process died while its values
        were being written holds only some of them: it cannot be decoded, and samplers skip it).

        Args:
            params: a trial's values.
        """
        return all(name in params for name in self.dimensions)

    def cap_memory(self, predict: Callable[[TrialConfig], int], most: int) -> None:
        """Make configurations whose predicted peak training memory exceeds ``most`` bytes infeasible.

        Args:
            predict: a configuration's predicted peak bytes.
            most: the memory budget in bytes.
        """
        self.memory_cap = (predict, most)
        self._canonical_cache = LruCache(CACHE_ENTRIES)

    def budget_load(self, params: dict[str, Any], limit: int) -> float | None:
        """How full the budgets are: the trainable count, or, under a memory cap, the larger of it and the
        predicted memory scaled so that the memory budget reads ``limit``; ``None`` when nothing is placed.

        Args:
            params: sampled values.
            limit: the largest allowed trainable-parameter count.
        """
        config = self.decode(params)
        if config is None:
            return None
        count = self.count(config)
        if self.memory_cap is None:
            return count
        predict, most = self.memory_cap
        return max(count, predict(config) / most * limit)

    def is_feasible(self, params: dict[str, Any], limit: int) -> bool:
        """Whether the values place something and stay within ``limit`` trainable parameters (and the memory budget)."""
        load = self.budget_load(params, limit)
        return load is not None and load <= limit

    # -- sampling, repair and encoding for optimisers -----------------------------------------------
    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """Random values for every dimension: :meth:`from_units` of a uniform point of the unit cube.

        Args:
            rng: the random generator.
        """
        return self.from_units(rng.random(len(self.dimensions)))

    def from_units(self, point: Sequence[float]) -> dict[str, Any]:
        """The values at a point of the unit cube, one coordinate per dimension in order.

        Each dimension is :meth:`from_unit` of its coordinate, except the on/off switches of a placement axis
        (:func:`~autopeft.methods.placement.placement_axis`: a method's layers; its module types, or its (layer,
        module) sites when modules are searched per layer). Those are decoded together, so that how many are on
        is uniform over 1..n: the first switch's coordinate ``u`` gives the count, ``ceil(u * n)``, and the
        ``count`` switches whose coordinates are smallest are on (the first switch ranks by the fractional part
        of ``u * n``, which is uniform whatever the count). Switched independently at 1/2, LoRA would reach all
        of 6 layers once in 64 draws, the status quo's placement among them; here once in 6. A uniform point
        gives uniform values and counts; a Sobol point spreads the counts as evenly as its first coordinates.

        Args:
            point: coordinates in [0, 1], as many as :attr:`dimensions`.
        """
        names = list(self.dimensions)
        values = {name: self.from_unit(name, u) for name, u in zip(names, point, strict=True)}
        for members in self._placement_axes.values():
            units = [min(max(float(point[i]), 0.0), 1.0) for i in members]
            scaled = units[0] * len(units)
            count = min(max(math.ceil(scaled), 1), len(units))
            order = sorted(range(len(units)), key=lambda k: scaled - math.floor(scaled) if k == 0 else units[k])
            for rank, k in enumerate(order):
                values[names[members[k]]] = rank < count
        return values

    @cached_property
    def _placement_axes(self) -> dict[str, list[int]]:
        """Placement axis -> the indices (in :attr:`dimensions`) of its on/off switches, for axes of two or more."""
        axes: dict[str, list[int]] = {}
        for i, (name, dist) in enumerate(self.dimensions.items()):
            axis = placement_axis(name)
            if axis is not None and isinstance(dist, CategoricalDistribution) and dist.choices == (False, True):
                axes.setdefault(axis, []).append(i)
        return {axis: members for axis, members in axes.items() if len(members) > 1}

    def from_unit(self, name: str, u: float) -> Any:
        """Map ``u`` in [0, 1] to a value of dimension ``name`` (inverse of :meth:`to_unit`)."""
        dist = self.dimensions[name]
        u = min(max(float(u), 0.0), 1.0)
        if isinstance(dist, CategoricalDistribution):
            return dist.choices[min(int(u * len(dist.choices)), len(dist.choices) - 1)]
        assert isinstance(dist, FloatDistribution)
        if dist.log:
            return float(math.exp(math.log(dist.low) + u * (math.log(dist.high) - math.log(dist.low))))
        return float(dist.low + u * (dist.high - dist.low))

    def to_unit(self, params: dict[str, Any]) -> np.ndarray:
        """Encode values in [0, 1]^d: choices by their index (ordinal), ranges (log-)linearly.

        Args:
            params: a value for every searched dimension.
        """
        return np.array([self._unit(name, params[name]) for name in self.dimensions])

    def _unit(self, name: str, value: Any) -> float:
        """One value of dimension ``name`` in [0, 1] (see :meth:`to_unit`)."""
        dist = self.dimensions[name]
        if isinstance(dist, CategoricalDistribution):
            n = len(dist.choices)
            return dist.choices.index(value) / (n - 1) if n > 1 else 0.0
        if dist.log:
            return (math.log(value) - math.log(dist.low)) / (math.log(dist.high) - math.log(dist.low))
        return (value - dist.low) / (dist.high - dist.low)

    def features(self, params: dict[str, Any]) -> np.ndarray:
        """Encode values for a surrogate model: their :meth:`canonical` values like :meth:`to_unit`, but
        unordered choices one-hot (so values that train the same model are one point to the model).

        On/off switches and numeric choices (ranks, alphas) keep one column, their index scaled to
        [0, 1] (an order the model may use); a choice among three or more words (an ``exclusive``
        group, a pruning criterion) becomes one 0/1 column per word, so no word lies between two others.

        Args:
            params: a value for every searched dimension.
        """
        params = self.canonical(params)
        unit = self.to_unit(params)
        columns: list[float] = []
        for i, (name, dist) in enumerate(self.dimensions.items()):
            if _unordered(dist):
                columns.extend(float(choice == params[name]) for choice in dist.choices)
            else:
                columns.append(float(unit[i]))
        return np.asarray(columns)

    def canonical(self, params: dict[str, Any]) -> dict[str, Any]:
        """The same configuration with every inactive dimension at its first value.

        A dimension is inactive in these values when it does not change what is trained: the rank
        of a module type that is switched off, the size of an adapter in a layer that has none,
        every dimension of a method that is off. Such a dimension is set to its first choice (the
        low end of a range) whenever that leaves the decoded configuration as it was, so values that
        train the same model have the same canonical values, the same :meth:`key` and the same
        :meth:`features`. Values that place nothing come back as they are.

        Args:
            params: a value for every searched dimension.
        """
        raw = self._raw_key(params)
        cached = self._canonical_cache.get(raw)
        if cached is not None:
            return dict(cached)
        config = self.decode(params)
        out = dict(params)
        target = config.to_dict() if config is not None else None
        moved = target is not None
        while moved:  # until a fixed point: a move can leave an earlier dimension without effect
            moved = False
            for name in self.dimensions:
                first = self.from_unit(name, 0.0)
                if out.get(name) == first:
                    continue
                changed = {**out, name: first}
                decoded = self.decode(changed)
                if decoded is not None and decoded.to_dict() == target:
                    out, moved = changed, True
        self._canonical_cache[raw] = out
        return dict(out)

    def _raw_key(self, params: dict[str, Any]) -> tuple:
        return tuple(
            round(v, 12) if isinstance(v, float) and not math.isnan(v) else v
            for v in (params.get(n) for n in self.dimensions)
        )

    def key(self, params: dict[str, Any]) -> tuple:
        """A hashable identity of the configuration the values train (floats rounded).

        Values that differ only in inactive dimensions (see :meth:`canonical`) have the same key.
        """
        return self._raw_key(self.canonical(params))

    def neighbours(self, params: dict[str, Any], range_step: float = 0.0) -> list[dict[str, Any]]:
        """Every configuration that differs from ``params`` in one choice dimension.

        Args:
            params: a value for every searched dimension.
            range_step: when positive, also each range dimension (learning rate, dropout) moved
                down and up by this fraction of its (log-)width, within its bounds.
        """
        result = []
        for name, dist in self.dimensions.items():
            if isinstance(dist, CategoricalDistribution):
                for choice in dist.choices:
                    if choice != params[name]:
                        result.append({**params, name: choice})
            elif range_step > 0:
                u = self._unit(name, params[name])
                for moved in (u - range_step, u + range_step):
                    if 0.0 <= moved <= 1.0:
                        result.append({**params, name: self.from_unit(name, moved)})
        return result

    def repair(self, params: dict[str, Any], limit: int) -> dict[str, Any]:
        """The nearest feasible values: change one choice at a time until within ``limit``.

        Each step takes the feasible neighbour with the most parameters (the smallest cut), or,
        when no neighbour is feasible yet, the one that reduces the count most. When no single change
        helps, it looks two changes away: under a memory budget, LoRA placed on one layer only moves to
        a higher layer by switching one layer off and another on. Values that are already feasible come
        back unchanged.

        Args:
            params: sampled values.
            limit: the largest allowed trainable-parameter count.

        Raises:
            ConfigError: no sequence of single changes reaches the budget.
        """
        current = dict(params)

        def violation(values: dict[str, Any]) -> float:
            count = self.budget_load(values, limit)
            if count is None:  # places nothing: every switch turned on brings it closer
                return _EMPTY - sum(v is True or (k.startswith("method.") and v != "none") for k, v in values.items())
            return count

        current_v = violation(current)
        while current_v > limit:
            scored = [(violation(n), n) for n in self.neighbours(current)]
            feasible = [(v, n) for v, n in scored if v <= limit]
            better = [(v, n) for v, n in scored if v < current_v]
            if not feasible and not better:  # stuck: try two changes at once
                scored = [(violation(m), m) for n in self.neighbours(current) for m in self.neighbours(n)]
                feasible = [(v, n) for v, n in scored if v <= limit]
                better = [(v, n) for v, n in scored if v < current_v]
            if feasible:
                return max(feasible, key=lambda item: item[0])[1]
            if not better:
                raise ConfigError(f"no configuration near {current} fits {limit} trainable parameters")
            current_v, current = min(better, key=lambda item: item[0])
        return current


def _unordered(dist: BaseDistribution) -> bool:
    """Whether a dimension is a choice among three or more values that are not all numbers."""
    if not isinstance(dist, CategoricalDistribution) or len(dist.choices) < 3:
        return False
    return not all(isinstance(c, int | float) and not isinstance(c, bool) for c in dist.choices)


def _group_dimension(group: list[str]) -> str:
    """The dimension choosing one method of an ``exclusive`` group: ``method.lora-or-adalora``."""
    return "method." + "-or-".join(group)


def _check_groups(spec: SpaceFile, sections: dict[str, BaseModel]) -> str | None:
    """``"exclusive: ..."`` when groups name unknown or repeated methods, or peft tuners that cannot share a model."""
    seen: set[str] = set()
    for i, group in enumerate(spec.exclusive):
        if len(group) < 2:
            return f"exclusive.{i}: a group names at least two methods, got {group}"
        for name in group:
            if name not in sections:
                return f"exclusive.{i}: {name!r} is not a method of this space; methods: {', '.join(sections)}"
            if name in seen:
                return f"exclusive.{i}: {name!r} is in two groups"
            seen.add(name)
    for a, b in conflicting_pairs(sections):
        if not any({a, b} <= set(g) for g in spec.exclusive):
            return f"exclusive: {a} and {b} cannot train in one model (peft); add the group [{a}, {b}]"
    return None
