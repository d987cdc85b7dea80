"""Value specifications shared by every section of a space file.

A value is written as a plain number, word or boolean (fixed), ``{choices: [...]}`` (a
categorical/ordinal dimension) or ``{low: ..., high: ..., log: true}`` (a continuous dimension).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, model_validator

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution


class _Yaml12Loader(yaml.SafeLoader):
    """``safe_load`` with YAML 1.2 booleans and floats: only ``true``/``false`` are booleans, so
    ``[no, yes]`` stays two words, and ``1e-3`` is a number (YAML 1.1 wants ``1.0e-3``)."""


_REPLACED = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float")
_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag not in _REPLACED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Yaml12Loader.add_implicit_resolver(  # after the integers' resolver, which keeps plain integers
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str, source: str | Path) -> Any:
    """YAML text read as :func:`read_yaml` reads a file, or a one-line error naming ``source``.

    Args:
        text: the YAML text.
        source: where it came from, for the message.
    """
    from autopeft.errors import ConfigError

    try:
        return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{source}: malformed YAML{where}: {getattr(exc, 'problem', exc)}") from None


def read_yaml(path: Path) -> Any:
    """The content of a YAML file, or a one-line error with the line.

    Safe loading (no code runs) with YAML 1.2 booleans: ``yes``/``no``/``on``/``off`` are words.

    Args:
        path: the file.
    """
    from autopeft.errors import ConfigError

    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    return parse_yaml(text, path)


def read_model_file(path: Path, model: type[BaseModel], keys: str) -> Any:
    """Read a YAML file and validate it as ``model``: one-line errors naming the file and the key.

    Args:
        path: the file.
        model: the pydantic model of the whole file.
        keys: its main keys, for the message when the file is not a mapping.
    """
    from autopeft.errors import ConfigError

    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with keys {keys}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {first_error(exc)}") from None


def first_error(exc: ValidationError, prefix: str = "") -> str:
    """The first problem of a pydantic validation error as ``key.path: message (and N more)``.

    Args:
        exc: the validation error.
        prefix: key path of the validated section within its file.
    """
    errors = exc.errors()
    err = errors[0]
    key = ".".join(str(p) for p in (*([prefix] if prefix else []), *err["loc"]))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required key is missing"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{key}: {msg}{more}" if key else f"{msg}{more}"


class Strict(BaseModel):
    """Base for space-file sections: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Choices(Strict):
    """A dimension that takes one of a list of values."""

    choices: list[Any] = Field(min_length=1, description="the values to choose from")

    @model_validator(mode="after")
    def _distinct(self) -> Choices:
        if len(set(map(repr, self.choices))) != len(self.choices):
            raise ValueError(f"choices must be distinct, got {self.choices}")
        return self


class Range(Strict):
    """A continuous dimension between ``low`` and ``high`` (log-uniform when ``log``)."""

    low: float = Field(description="smallest value")
    high: float = Field(description="largest value")
    log: bool = Field(False, description="search on a log scale")

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        return self


_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _number(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` and ``1.0e30`` as strings: take them as the numbers they are."""
    return float(value) if isinstance(value, str) and _NUMBER.match(value.strip()) else value


def _parse_value_spec(value: Any) -> float | str | bool | Choices | Range:
    """Pick the form by shape, so an error speaks of the form the user meant."""
    value = _number(value)
    if isinstance(value, dict):
        value = {
            k: ([_number(c) for c in v] if k == "choices" and isinstance(v, list) else _number(v))
            for k, v in value.items()
        }
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, (str, bool)):
        return value
    if isinstance(value, (Choices, Range)):
        return value
    if isinstance(value, dict) and ("choices" in value or "low" in value or "high" in value):
        model = Choices if "choices" in value else Range
        try:
            return model.model_validate(value)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
            raise ValueError(f"{where}: {msg}" if where else msg) from None
    raise ValueError(f"expected a fixed value, {{choices: [...]}} or {{low: ..., high: ..., log: ...}}, got {value!r}")


ValueSpec = Annotated[float | str | bool | Choices | Range, PlainValidator(_parse_value_spec)]
"""A fixed value (number, word, boolean), :class:`Choices` or :class:`Range`."""


def distribution(spec: ValueSpec) -> BaseDistribution | None:
    """The Optuna distribution of a value spec, or ``None`` when the value is fixed.

    Args:
        spec: a fixed number, :class:`Choices` or :class:`Range`.
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution  # only when a space is built

    if isinstance(spec, Choices):
        return CategoricalDistribution(spec.choices) if len(spec.choices) > 1 else None
    if isinstance(spec, Range):
        return FloatDistribution(spec.low, spec.high, log=spec.log)
    return None


def fixed_value(spec: ValueSpec) -> Any:
    """The value of a spec that is not searched (a number, or a single choice)."""
    if isinstance(spec, Choices):
        return spec.choices[0]
    return spec


def all_numbers(spec: ValueSpec) -> bool:
    """Whether every value a spec can take is a number (booleans are not numbers here)."""
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers(spec))


def all_booleans(spec: ValueSpec) -> bool:
    """Whether every value a spec can take is ``true`` or ``false``."""
    return all(isinstance(v, bool) for v in numbers(spec))


def numbers(spec: ValueSpec) -> list[Any]:
    """Every value a spec can take, where that is a finite list; a range gives its two ends."""
    if isinstance(spec, Choices):
        return list(spec.choices)
    if isinstance(spec, Range):
        return [spec.low, spec.high]
    return [spec]
