"""The study spec: what a search is asked to do, one nested and validated model.

``StudySpec`` has three sections: :class:`What` is searched (task, model, space, budget, objectives, the
training schedule and its rungs, the status quo), :class:`How` it runs (sampler, trials, workers, seeds,
confirmations, resources), and :class:`Where` it writes (study name, runs folder, stores). Every field is
declared once, with its :class:`Option`: the command-line flag ``search`` and ``submit`` take, its help,
its check, and whether a continued study must ask for the same value (every field of ``What``). The
command line, spec files (``--spec``), the stored spec, the resume check and ``submit``'s shipped spec all
read these declarations, so a new field is one declaration here.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from autopeft import defaults
from autopeft.errors import AutopeftError
from autopeft.runs_dir import RunsDir, default_runs_dir

# -- declarations --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """How a spec field is given and checked.

    Attributes:
        help: the flag's help (``%`` doubled for argparse).
        flag: the command-line flag (default ``--<field-name>``); ``None`` with ``cli=False``.
        check: the value's check: a problem (``"must be at least 1"``) or ``None``.
        cli: whether ``search`` takes it as a flag.
        url: a URL whose password is masked when stored or printed.
        env: the environment variable that gives its default.
        aliases: further flags that mean the same (older names).
        resume: in ``What``: whether a continued study must ask for the same value.
    """

    help: str
    flag: str | None = None
    check: Callable[[Any], str | None] | None = None
    cli: bool = True
    url: bool = False
    env: str | None = None
    aliases: tuple[str, ...] = ()
    resume: bool = True


def at_least(low: float, unit: str = "") -> Callable[[Any], str | None]:
    """A check that a number is at least ``low`` (``None`` values pass).

    Args:
        low: the least value allowed.
        unit: the unit the message names (``seconds``).
    """
    return lambda v: None if v is None or v >= low else f"must be at least {low:g}{' ' + unit if unit else ''}"


def positive(v: Any) -> str | None:
    """A check that a number is positive (``None`` values pass)."""
    return None if v is None or v > 0 else "must be positive"


def within_unit(v: Any) -> str | None:
    """A check that a number lies in [0, 1] (``None`` values pass)."""
    return None if v is None or 0 <= v <= 1 else "must be between 0 and 1"


def fraction(text: Any) -> float:
    """A fraction written as ``1/9``, ``0.11`` or a number; an error naming what is wrong.

    Args:
        text: the value.
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    items = [part.strip() for part in str(text).split(",")]
    if len(items) != 1:
        raise ValueError(f"one fraction (like 1/9 or 0.11), got {text!r}")
    try:
        return float(Fraction(items[0]))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{items[0]!r} is not a fraction (like 1/4 or 0.25)") from None


Fractional = Annotated[float, BeforeValidator(fraction)]
"""A fraction field: ``1/9`` or ``0.11`` on the command line and in spec files."""


def mask_url(url: str) -> str:
    """A storage/tracking URL with any password replaced by ``***`` (for printing and storing)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


class Section(BaseModel):
    """A spec section: unknown keys refused, values never changed after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="after")
    def _check(self) -> Section:
        for name, info in type(self).model_fields.items():
            option = option_of(info)
            if option is not None and option.check is not None:
                problem = option.check(getattr(self, name))
                if problem:
                    raise AutopeftError(f"{flag_of(name, option)} {problem}, got {getattr(self, name)}")
        return self


def option_of(info) -> Option | None:
    """The :class:`Option` declared on a model field (``None`` for a nested section)."""
    return next((m for m in info.metadata if isinstance(m, Option)), None)


def flag_of(name: str, option: Option) -> str:
    """A field's command-line flag."""
    return option.flag or f"--{name.replace('_', '-')}"


# -- the sections --------------------------------------------------------------------------------------


class Training(Section):
    """How every trial trains: the full schedule, as ``retrain`` trains (its rungs are fractions of it)."""

    epochs: Annotated[float, Option("training epochs, fractions allowed", check=positive)] = defaults.EPOCHS
    max_train_samples: Annotated[int | None, Option("training examples (0 = all)", check=at_least(0))] = (
        defaults.MAX_TRAIN_SAMPLES
    )
    max_eval_samples: Annotated[int | None, Option("evaluation examples scored (0 = all)", check=at_least(0))] = None
    batch_size: Annotated[int, Option("training batch size", check=at_least(1))] = defaults.BATCH_SIZE
    max_length: Annotated[int, Option("truncation length in tokens", check=at_least(1))] = defaults.MAX_LENGTH
    attention_dropout: Annotated[
        bool,
        Option(
            "keep the model's dropout on attention probabilities while training (--no-attention-dropout: the fused "
            "attention kernel runs on CPUs too, 10-25%% faster, but the model trains unlike its own config)"
        ),
    ] = True
    eval_batch_size: Annotated[int, Option("evaluation batch size", cli=False, check=at_least(1))] = 128
    warmup_ratio: Annotated[float, Option("linear warm-up's share of the steps", cli=False)] = 0.06
    rung_eval_samples: Annotated[int | None, Option("examples scored at rungs (None: all)", cli=False)] = None

    @model_validator(mode="before")
    @classmethod
    def _zero_means_all(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {
                k: (None if k in ("max_train_samples", "max_eval_samples") and v == 0 else v) for k, v in data.items()
            }
        return data

    def memory_shape(self, text: str | None):
        """The batch shape memory is stated for: ``text`` (``--memory-shape``), else the batch size x max length.

        Args:
            text: the option's value, or ``None``.
        """
        from autopeft.training.memory import MemoryShape, parse_shape

        return parse_shape(text) if text else MemoryShape(self.batch_size, self.max_length)

    def settings(self):
        """The trainer's settings (``ProxySettings``)."""
        from autopeft.training import ProxySettings

        return ProxySettings(**self.model_dump())


class Rungs(Section):
    """Successive halving: where trials are compared on their way to full fidelity, and how many go on
    (see :mod:`autopeft.execution.rungs`)."""

    first: Annotated[
        Fractional,
        Option(
            "where every trial is first compared with its peers, a fraction of the full schedule; raised (doubled) "
            "while no trial learns there",
            flag="--first-rung",
        ),
    ] = defaults.FIRST_RUNG
    cap: Annotated[Fractional, Option("the first rung is never raised past this fraction", flag="--first-rung-cap")] = (
        defaults.FIRST_RUNG_CAP
    )
    reduction: Annotated[
        float,
        Option(
            "successive halving: a trial goes on past a rung only within the top 1/REDUCTION of the rung's entries; "
            "rungs lie at first-rung x REDUCTION^k of the schedule"
        ),
    ] = defaults.REDUCTION
    grace: Annotated[int, Option("entries a rung must have seen before a trial stops there")] = defaults.GRACE
    score: Annotated[
        Literal["neg_loss", "metric"],
        Option(
            "what rungs rank on: minus the selection loss (neg_loss: it ranks while the metric still ties at the "
            "majority class) or the task metric",
            flag="--rung-score",
        ),
    ] = defaults.RUNG_SCORE

    @model_validator(mode="after")
    def _policy(self) -> Rungs:
        if not 0 < self.first < 1:
            raise AutopeftError(f"--first-rung must be a fraction in (0, 1), got {self.first}")
        if not self.first <= self.cap < 1:
            raise AutopeftError(f"--first-rung-cap must lie in [--first-rung, 1), got {self.cap}")
        if self.reduction <= 1:
            raise AutopeftError(f"--reduction must be > 1, got {self.reduction}")
        if self.grace < 2:
            raise AutopeftError(f"--grace must be at least 2 entries, got {self.grace}")
        return self

    def ladder(self, first: float | None = None) -> tuple[float, ...]:
        """The rungs from a first rung (default: :attr:`first`): ``first x reduction^k`` below 1, then 1.

        Args:
            first: the first rung (a raised one).
        """
        rungs, at = [], first or self.first
        while at < 1 - 1e-9:
            rungs.append(at)
            at *= self.reduction
        return (*rungs, 1.0)


SuccessiveHalving = Rungs
"""The successive-halving policy is the spec's rungs section."""


def _default_model() -> str:
    from autopeft.models import default_model

    return default_model()


def _memory_problem(value: str | None, shape: bool = False) -> str | None:
    """The problem of a ``--memory-budget`` or ``--memory-shape`` value (``None`` when fine or not given)."""
    if value is None:
        return None
    from autopeft.training.memory import parse_memory, parse_shape

    try:
        (parse_shape if shape else parse_memory)(value)
    except AutopeftError as exc:
        return str(exc).split(": ", 1)[1]
    return None


class What(Section):
    """What is searched: every field must be the same when a study continues."""

    task: Annotated[str, Option("built-in task (rte, mrpc, cola, sst2, stsb) or a task file (see tasks/)")]
    budget: Annotated[
        str,
        Option(
            "max trainable parameters of the PEFT modules: a percentage (0.5%%) or fraction (0.005) of the backbone's "
            "parameters, or a count (120k). The classification head is not counted (it is reported separately)."
        ),
    ]
    model: Annotated[str, Option("HF model id or local folder (default: the packaged all-MiniLM-L6-v2)")] = Field(
        default_factory=_default_model
    )
    space: Annotated[str, Option("search space file, or a name under search_spaces/")] = "default"
    objectives: Annotated[
        str,
        Option(
            "objectives: names, the first the score trials are selected on at full fidelity (metric, or neg_loss); "
            "add sparsity for a space that prunes; or a file under objectives/"
        ),
    ] = defaults.OBJECTIVES
    memory_budget: Annotated[
        str | None,
        Option(
            "max predicted peak training memory at --memory-shape, such as 6GiB: no configuration over it is trained "
            "(add memory to --objectives to search it too)",
            check=lambda v: _memory_problem(v),
        ),
    ] = None
    memory_shape: Annotated[
        str | None,
        Option(
            "the batch the memory objective and budget are stated for, BATCHxLENGTH such as 32x256 "
            "(default: the batch size x max length)",
            check=lambda v: _memory_problem(v, shape=True),
        ),
    ] = None
    scored_on: Annotated[
        Literal["selection", "validation"],
        Option(
            "what trials are scored on: selection (the task's selection file, or a stratified 10%% of the train split "
            "held out, 200 to 1,000 examples; the validation split is never read) or validation (selected and "
            "reported on the same data: optimistic figures)",
            aliases=("--select-on",),
        ),
    ] = "selection"
    status_quo: Annotated[
        str,
        Option(
            "the configuration you would use without a search, trained beside it to the end: a baseline name "
            "(lora: LoRA r=8 on query and value), an export folder or a configuration file; best is never worse "
            "than it on the selection split"
        ),
    ] = defaults.STATUS_QUO
    training: Training = Field(default_factory=Training)
    rungs: Rungs = Field(default_factory=Rungs)
    data_dir: Annotated[
        str | None,
        Option("folder of the GLUE tasks; default: download with `datasets`", env="AUTOPEFT_DATA_DIR", resume=False),
    ] = Field(default_factory=lambda: os.environ.get("AUTOPEFT_DATA_DIR"))
    trust_remote_code: Annotated[bool, Option("allow the model's own code from its repository", resume=False)] = False

    @model_validator(mode="after")
    def _resolve(self) -> What:
        from autopeft.tasks import task_reference

        object.__setattr__(self, "task", task_reference(self.task))  # a task file travels by absolute path
        if self.data_dir is not None:
            object.__setattr__(self, "data_dir", str(Path(self.data_dir).expanduser().resolve()))
        return self


class How(Section):
    """How the search runs: any of it may change when a study continues."""

    sampler: Annotated[str, Option("botorch (multi-objective BO), random, tpe, nsga2, gp (Optuna's GPSampler)")] = (
        "botorch"
    )
    trials: Annotated[int, Option("trials the study should hold (the status quo is not one)", check=at_least(1))] = (
        defaults.TRIALS
    )
    workers: Annotated[int, Option("trainings at the same time", check=at_least(1))] = defaults.WORKERS
    seed: Annotated[int, Option("random seed of the sampler and of each trial's training (plus its number)")] = 0
    start_load: Annotated[
        Fractional,
        Option(
            "botorch only: the quasi-random start's configurations fill at least this share of the parameter budget "
            "(0: anywhere; the model's later proposals are not held to it)",
            check=within_unit,
        ),
    ] = 0.0
    confirm: Annotated[
        int,
        Option(
            "confirmation runs at the end, at full fidelity: best and knee trained again with another seed and picked "
            "on their mean (0: pick on single draws)",
            check=at_least(0),
        ),
    ] = defaults.CONFIRM
    max_failures: Annotated[
        int | None, Option("stop starting trials after this many failures (default max(5, trials/4))")
    ] = None
    gpus_per_trial: Annotated[
        float, Option("GPUs per trial; fractions pack several trials on one GPU", check=at_least(0))
    ] = 0.0
    ray_address: Annotated[
        str | None, Option("an existing Ray cluster: auto, host:port or ray://host:port (default: start a local one)")
    ] = None
    heartbeat_grace: Annotated[
        float,
        Option(
            "seconds without a heartbeat after which a running trial counts as dead; workers sharing a study should "
            "use the same",
            check=at_least(3, "seconds"),
        ),
    ] = defaults.HEARTBEAT_GRACE_S


class Where(Section):
    """Where the study is written."""

    study: Annotated[
        str | None,
        Option("study name (default: <task>-<model>-<budget>-<space>); the same name continues a study"),
    ] = None
    runs_dir: Annotated[str, Option("folder holding everything studies write", env="AUTOPEFT_RUNS_DIR")] = Field(
        default_factory=default_runs_dir
    )
    storage: Annotated[
        str | None,
        Option("Optuna storage URL (default: sqlite:///<runs-dir>/optuna.db)", url=True, env="AUTOPEFT_STORAGE"),
    ] = Field(default_factory=lambda: os.environ.get("AUTOPEFT_STORAGE"))
    tracking_uri: Annotated[
        str | None,
        Option("MLflow tracking URI (default: sqlite:///<runs-dir>/mlflow.db)", url=True, env="MLFLOW_TRACKING_URI"),
    ] = Field(default_factory=lambda: os.environ.get("MLFLOW_TRACKING_URI"))

    @model_validator(mode="after")
    def _resolve(self) -> Where:
        runs = RunsDir.at(self.runs_dir)
        object.__setattr__(self, "runs_dir", str(runs.root))
        object.__setattr__(self, "storage", self.storage or runs.storage)
        object.__setattr__(self, "tracking_uri", self.tracking_uri or runs.tracking_uri)
        return self


SECTIONS = {"what": What, "how": How, "where": Where}


class StudySpec(BaseModel):
    """What a search is asked to do (see the module docstring).

    Attributes:
        what: what is searched (the same whenever the study continues).
        how: how it runs.
        where: where it writes.
    """

    model_config = ConfigDict(frozen=True)

    what: What
    how: How = Field(default_factory=How)
    where: Where = Field(default_factory=Where)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudySpec:
        """A spec from its stored form (nested sections), or from flat option names (a spec file, the command
        line: ``max-train-samples``, ``first-rung``...); a spec stored by an earlier autopeft is read too.

        Args:
            data: the mapping.

        Raises:
            AutopeftError: an unknown key, or a value that fails its check (one line, naming the option).
        """
        if set(data) & set(SECTIONS):
            nested = data
        else:
            nested = from_flat(_legacy(data))
        try:
            return cls.model_validate(nested)
        except ValidationError as exc:
            raise AutopeftError(validation_message(exc)) from None

    def to_dict(self, masked: bool = True) -> dict[str, Any]:
        """The stored form: nested sections, URLs masked, the backbone's public id beside its folder.

        Args:
            masked: replace passwords in URLs (the stored and printed form).
        """
        from autopeft.models import public_model_id

        data = self.model_dump(mode="json")
        if masked:
            for section, name, option in leaves():
                if option.url and data[section].get(name):
                    data[section][name] = mask_url(data[section][name])
        data["model_id"] = public_model_id(self.what.model)
        return data

    def flat(self) -> dict[str, Any]:
        """The spec as flat option names (``max-train-samples: 0``...): what a spec file holds."""
        out = {}
        for path, option in paths():
            value = self.get(path)
            out[flag_of(path[-1], option).removeprefix("--")] = value
        return out

    def get(self, path: tuple[str, ...]) -> Any:
        """The value at a field's path (``("what", "training", "epochs")``)."""
        value: Any = self
        for part in path:
            value = getattr(value, part)
        return value

    @functools.cached_property
    def name(self) -> str:
        """The study's name: given, or ``<task>-<model>-<budget>-<space>`` (computed once: it reads the task file)."""
        from autopeft.tasks import get_task

        if self.where.study:
            return self.where.study
        return study_slug(get_task(self.what.task).name, self.what.model, self.what.budget, Path(self.what.space).stem)

    @property
    def runs(self) -> RunsDir:
        """The runs folder."""
        return RunsDir.at(self.where.runs_dir)


def paths(model: type[BaseModel] = StudySpec, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Option]]:
    """Every declared field: its path from the spec's root and its :class:`Option`."""
    for name, info in model.model_fields.items():
        option = option_of(info)
        if option is not None:
            yield (*prefix, name), option
        elif isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            yield from paths(info.annotation, (*prefix, name))


def leaves() -> Iterator[tuple[str, str, Option]]:
    """The top-level fields of each section (section, field, option)."""
    for path, option in paths():
        if len(path) == 2:
            yield path[0], path[1], option


def from_flat(flat: dict[str, Any]) -> dict[str, Any]:
    """Flat option names (``max-train-samples``, ``first_rung``) into the nested form.

    Raises:
        AutopeftError: a key no field declares.
    """
    by_name: dict[str, tuple[str, ...]] = {}
    for path, option in paths():
        for flag in (flag_of(path[-1], option), *option.aliases):
            by_name[flag.removeprefix("--").replace("-", "_")] = path
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        path = by_name.get(str(key).replace("-", "_"))
        if path is None:
            known = ", ".join(sorted(k.replace("_", "-") for k in by_name))
            raise AutopeftError(f"{key}: unknown key; allowed: {known}")
        node = nested
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return nested


def _legacy(data: dict[str, Any]) -> dict[str, Any]:
    """A spec stored flat by an earlier autopeft, in today's flat names (``proxy`` was the training, ``select_on``
    the split scored on, and its absence meant validation; early stopping is gone)."""
    if "proxy" not in data and "study_name" not in data:
        return data  # already option names
    flat = {k: v for k, v in data.items() if k not in ("proxy", "early_stopping", "model_id", "study_name")}
    flat |= {k: v for k, v in (data.get("proxy") or {}).items()}
    flat["study"] = data.get("study_name")
    flat["scored_on"] = data.get("select_on", "validation")
    flat.pop("select_on", None)
    if isinstance(data.get("rungs"), dict):
        flat.pop("rungs")
        rungs = data["rungs"]
        named = {"first": "first_rung", "cap": "first_rung_cap", "reduction": "reduction", "grace": "grace",
                 "score": "rung_score"}  # fmt: skip
        flat |= {flat_name: rungs.get(name) for name, flat_name in named.items()}
    return {k: v for k, v in flat.items() if v is not None or k in ("data_dir", "ray_address")}


def validation_message(exc: ValidationError) -> str:
    """A pydantic error as one line naming the option."""
    error = exc.errors()[0]
    names = [str(part) for part in error["loc"] if not isinstance(part, int)]
    leaf = names[-1] if names else "spec"
    declared = {path[-1]: option for path, option in paths()}
    flag = flag_of(leaf, declared[leaf]) if leaf in declared else leaf
    if error["type"] == "extra_forbidden":
        return f"{leaf}: unknown key"
    if error["type"] == "missing":
        return f"{flag} is required (on the command line or in --spec)"
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    return f"{flag}: {message}"


def study_slug(task: str, model: str, budget: str, suffix: str) -> str:
    """``<task>-<model>-<budget>-<suffix>`` in lower case, the model by its folder's or id's last part.

    Args:
        task: the task's name.
        model: HF id or folder of the backbone.
        budget: the budget as written (``0.5%`` becomes ``0.5pct``).
        suffix: the space's name, or ``baselines``.
    """
    path = Path(model.rstrip("/"))
    model_name = path.parent.name if path.name == "model" else path.name
    text = f"{task}-{model_name}-{budget.replace('%', 'pct')}-{suffix}"
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


def field_kind(info) -> tuple[type, tuple | None]:
    """A field's scalar type on the command line (``str`` for fractions and choices) and its choices (or ``None``).

    Args:
        info: the pydantic field.
    """
    if any(isinstance(m, BeforeValidator) and m.func is fraction for m in info.metadata):
        return str, None
    annotation = info.annotation
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is Literal:
        return str, get_args(annotation)
    if args and get_origin(annotation) is not Literal:
        annotation = args[0]
    return annotation, None
