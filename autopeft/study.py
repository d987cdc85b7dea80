"""The study: one object holding task, model, space, budget, objectives, storage and tracking.

A :class:`StudySpec` is what the user asked for; :func:`open_study` binds it (backbone, space,
budget limit) and creates or continues the Optuna study in its RDB storage. The spec, the space
file's text and the budget limit are stored as study user attributes, so ``pareto``, ``export`` and
other commands need only the study's name and storage.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import optuna

from autopeft import defaults, failpoints
from autopeft.budget import Budget, parse_budget
from autopeft.errors import AutopeftError, BudgetError
from autopeft.locks import sqlite_path, store_lock
from autopeft.methods.config import TrialConfig
from autopeft.models import BackboneInfo, backbone_info, default_model, public_model_id, resolve_backbone
from autopeft.objectives import Objective, parse_objectives
from autopeft.pareto import STATUS_QUO_SUFFIX, mean_metric, mean_values, task_metric
from autopeft.references import StatusQuo, resolve_status_quo
from autopeft.samplers import KnownObjective, create_sampler
from autopeft.space import SearchSpace
from autopeft.tasks import TaskSpec, get_task, task_reference
from autopeft.training import ProxySettings
from autopeft.training.data import EVALUATION_SPLITS

logger = logging.getLogger(__name__)
SPEC_ATTR = "autopeft.spec"
HEARTBEATS_PER_GRACE = 3
"""Heartbeats a running trial gets within the grace after which it counts as dead."""


def default_runs_dir() -> str:
    """``$AUTOPEFT_RUNS_DIR`` or ``./autopeft-runs``."""
    return os.environ.get("AUTOPEFT_RUNS_DIR", "autopeft-runs")


def default_storage(runs_dir: str | Path) -> str:
    """The SQLite Optuna storage inside a runs folder."""
    return f"sqlite:///{Path(runs_dir).resolve() / 'optuna.db'}"


def default_tracking_uri(runs_dir: str | Path) -> str:
    """The SQLite MLflow store inside a runs folder."""
    return f"sqlite:///{Path(runs_dir).resolve() / 'mlflow.db'}"


def mask_url(url: str) -> str:
    """A storage/tracking URL with any password replaced by ``***`` (for printing and logging)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


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


@dataclass(frozen=True)
class SuccessiveHalving:
    """Where trials are compared on their way to full fidelity, and how many go on (see
    :mod:`autopeft.execution.rungs`).

    Attributes:
        first: the first rung, a fraction of the full schedule (raised while nothing learns there).
        reduction: a trial goes on past a rung only within the top ``1 / reduction`` of the rung's entries;
            the rungs lie at ``first x reduction^k`` of the schedule, then at its end.
        grace: entries a rung must have seen (this one included) before any trial stops there.
        score: what rungs rank on: ``neg_loss`` (minus the selection loss, which orders models whose
            thresholded metric still ties at the majority class) or ``metric`` (the task's main metric).
        cap: the first rung is never raised past this fraction.
    """

    first: float = defaults.FIRST_RUNG
    reduction: float = defaults.REDUCTION
    grace: int = defaults.GRACE
    score: str = defaults.RUNG_SCORE
    cap: float = defaults.FIRST_RUNG_CAP

    def __post_init__(self) -> None:
        if not 0 < self.first < 1:
            raise AutopeftError(f"--first-rung must be a fraction in (0, 1), got {self.first}")
        if not self.first <= self.cap < 1:
            raise AutopeftError(f"--first-rung-cap must lie in [--first-rung, 1), got {self.cap}")
        if self.reduction <= 1:
            raise AutopeftError(f"--reduction must be > 1, got {self.reduction}")
        if self.score not in defaults.RUNG_SCORES:
            raise AutopeftError(f"--rung-score must be one of {', '.join(defaults.RUNG_SCORES)}, got {self.score!r}")
        if self.grace < 2:
            raise AutopeftError(f"--grace must be at least 2 entries, got {self.grace}")

    def ladder(self, first: float | None = None) -> tuple[float, ...]:
        """The rungs from a first rung (default: :attr:`first`): ``first x reduction^k`` below 1, then 1.

        Args:
            first: the first rung (a raised one).
        """
        rungs, fraction = [], first or self.first
        while fraction < 1 - 1e-9:
            rungs.append(fraction)
            fraction *= self.reduction
        return (*rungs, 1.0)


def parse_fractions(text: str | None, option: str) -> tuple[float, ...] | None:
    """Comma-separated fractions (``1/8,1/4,0.5``) as floats; ``None`` when ``text`` is.

    Args:
        text: the option's value.
        option: the option's name, for the error message.
    """
    if text is None:
        return None
    values = []
    for item in text.split(","):
        try:
            values.append(float(Fraction(item.strip())))
        except (ValueError, ZeroDivisionError):
            raise AutopeftError(f"{option}: {item.strip()!r} is not a fraction (like 1/4 or 0.25)") from None
    return tuple(values)


@dataclass
class StudySpec:
    """What a search is asked to do. Every field has a CLI option of the same name.

    Attributes:
        task: built-in task name, or a task file (stored as its absolute path).
        budget: trainable-parameter budget (``0.5%``, ``0.005``, ``120k``).
        model: HF id or folder of the backbone (default: the packaged all-MiniLM-L6-v2).
        space: space file or shipped space name.
        objectives: names (``neg_loss,params``; the first is the score the search selects on) or an
            objectives file.
        sampler: ``botorch``, ``random``, ``tpe`` or ``nsga2``.
        trials: finished trials the study should hold.
        workers: trials run at the same time.
        seed: seed of the sampler and of each trial's training (plus the trial number).
        data_dir: local GLUE folder (``$AUTOPEFT_DATA_DIR``); ``None`` uses the hub.
        runs_dir: folder for everything a study writes.
        storage: Optuna storage URL (default: SQLite in ``runs_dir``).
        tracking_uri: MLflow tracking URI (default: SQLite in ``runs_dir``).
        study_name: the study's name (default derived from task, model, budget and space).
        proxy: how each trial is trained: the full schedule (its rungs are fractions of it).
        rungs: successive halving: where trials are compared on their way to full fidelity.
        status_quo: the user's own default, trained beside the search at full fidelity: a ``baselines``
            name (``lora``: LoRA r=8 on query and value), an export folder or a configuration file.
        heartbeat_grace: seconds without a heartbeat after which a running trial counts as dead.
        gpus_per_trial: GPUs per trial, fractions allowed (0 on CPU machines).
        ray_address: an existing Ray cluster (``auto``, ``ray://host:port``); ``None`` starts one.
        trust_remote_code: allow custom modelling code of the model.
        select_on: what trials are scored on: ``selection`` (the default: the task's selection file,
            or a stratified part of the train split held out, seeded by ``seed``; the search never
            reads the validation split) or ``validation`` (the old behaviour: the figures a search
            reports are then optimistic, selected and reported on the same data).
        confirm: confirmation runs at the end of the search: the trials ``best`` and ``knee`` pick
            are trained again with another seed and picked on their mean (0: pick on single draws;
            see :mod:`autopeft.execution.confirmations`).
    """

    task: str
    budget: str
    model: str = field(default_factory=default_model)
    space: str = "default"
    objectives: str = defaults.OBJECTIVES
    sampler: str = "botorch"
    trials: int = defaults.TRIALS
    workers: int = defaults.WORKERS
    seed: int = 0
    data_dir: str | None = field(default_factory=lambda: os.environ.get("AUTOPEFT_DATA_DIR"))
    runs_dir: str = field(default_factory=default_runs_dir)
    storage: str | None = None
    tracking_uri: str | None = None
    study_name: str | None = None
    proxy: ProxySettings = field(default_factory=ProxySettings)
    rungs: SuccessiveHalving = field(default_factory=SuccessiveHalving)
    status_quo: str = defaults.STATUS_QUO
    gpus_per_trial: float = 0.0
    ray_address: str | None = None
    trust_remote_code: bool = False
    select_on: str = "selection"
    confirm: int = defaults.CONFIRM
    heartbeat_grace: float = defaults.HEARTBEAT_GRACE_S

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise AutopeftError(f"--trials must be at least 1, got {self.trials}")
        if self.workers < 1:
            raise AutopeftError(f"--workers must be at least 1, got {self.workers}")
        if self.gpus_per_trial < 0:
            raise AutopeftError(f"--gpus-per-trial must not be negative, got {self.gpus_per_trial}")
        if self.proxy.epochs <= 0:
            raise AutopeftError(f"--epochs must be positive, got {self.proxy.epochs}")
        if self.confirm < 0:
            raise AutopeftError(f"--confirm must not be negative, got {self.confirm}")
        if self.heartbeat_grace < 3:
            raise AutopeftError(f"--heartbeat-grace must be at least 3 seconds, got {self.heartbeat_grace}")
        if self.select_on not in EVALUATION_SPLITS:
            raise AutopeftError(f"--select-on must be one of {', '.join(EVALUATION_SPLITS)}, got {self.select_on!r}")
        self.task = task_reference(self.task)  # a task file travels to workers by absolute path
        self.runs_dir = str(Path(self.runs_dir).resolve())
        if self.data_dir is not None:
            self.data_dir = str(Path(self.data_dir).expanduser().resolve())
        self.storage = self.storage or default_storage(self.runs_dir)
        self.tracking_uri = self.tracking_uri or default_tracking_uri(self.runs_dir)

    @functools.cached_property
    def name(self) -> str:
        """The study's name: given, or ``<task>-<model>-<budget>-<space>`` (computed once: it reads the task file)."""
        if self.study_name:
            return self.study_name
        return study_slug(get_task(self.task).name, self.model, self.budget, Path(self.space).stem)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (stored with the study; URLs masked), with the backbone's public id beside its folder."""
        data = asdict(self)
        data["model_id"] = public_model_id(self.model)
        data["storage"] = mask_url(str(self.storage))
        data["tracking_uri"] = mask_url(str(self.tracking_uri))
        return data


@dataclass
class BoundStudy:
    """A spec resolved against its backbone, ready to search.

    Attributes:
        spec: the user's request.
        task: the task.
        info: the backbone's description.
        space: the bound search space.
        budget: the parsed budget.
        limit: the largest allowed trainable-parameter count.
        objectives: the objectives, ``metric`` first.
        study: the Optuna study (created or continued).
        storage: the storage it lives in (heartbeats are recorded there).
        status_quo: the user's own default, trained beside the trials (in :attr:`status_quo_study`).
    """

    spec: StudySpec
    task: TaskSpec
    info: BackboneInfo
    space: SearchSpace
    budget: Budget
    limit: int
    objectives: list[Objective]
    study: optuna.Study
    storage: optuna.storages.BaseStorage
    status_quo: StatusQuo

    @functools.cached_property
    def status_quo_study(self) -> optuna.Study:
        """The companion study holding the status quo's runs (not trials of the search: the sampler never sees
        them, they do not count in ``trials``, and they cannot be the knee)."""
        return open_status_quo_study(self.study, self.storage)

    @property
    def selection_seed(self) -> int:
        """The seed of the held-out selection part, the same for every worker of the study (whatever its ``--seed``)."""
        return int(self.study.user_attrs.get(SELECTION_SEED_ATTR, self.spec.seed))

    def exact_values(self, config: TrialConfig) -> dict[str, float]:
        """The objectives known before training, by name, in the units the study stores.

        The one formula of each: the value a trial stores and the value the sampler assumes both
        come from here. ``params``: the PEFT modules' trainable count as a fraction of the
        backbone; ``sparsity``: the fraction of the encoder-layer Linear weights the configuration
        prunes (its target, exact before training; the measured value is kept beside it).

        Args:
            config: a decoded configuration.
        """
        return {
            "params": self.info.fraction(self.space.count(config)),
            "sparsity": self.space.target_sparsity(config),
        }

    def known_objectives(self) -> dict[int, KnownObjective]:
        """The objectives exact before training, by index, as the sampler reads them from sampled values."""

        def exact(name: str) -> Callable[[dict[str, Any]], float]:
            def value(params: dict[str, Any]) -> float:
                config = self.space.decode(params)
                return 0.0 if config is None else self.exact_values(config)[name]

            return value

        worst = {"params": self.info.fraction(self.limit), "sparsity": 0.0}
        return {
            i: KnownObjective(exact(o.name), worst[o.name])
            for i, o in enumerate(self.objectives)
            if o.known_before_training
        }

    def objective_values(self, config: TrialConfig, result: dict[str, Any]) -> list[float]:
        """The values the study stores for a trained configuration: exact ones from the configuration,
        measured ones from the training's result.

        Args:
            config: the trained configuration.
            result: the proxy training's result (``metric``, ``metrics``, ...).
        """
        exact = self.exact_values(config)
        return [exact[o.name] if o.known_before_training else o.measured(result) for o in self.objectives]

    def create_sampler(self) -> optuna.samplers.BaseSampler:
        """The study's sampler, built as every search builds it (the spec's sampler and seed, the exact objectives,
        and the first-rung scores it learns from)."""
        known = self.known_objectives()
        return create_sampler(self.spec.sampler, self.space, self.limit, self.spec.seed, known, self.observed_values)

    def observed_values(self, trial: optuna.trial.FrozenTrial) -> list[float] | None:
        """What the sampler learns of a trial (``None`` while nothing: it is pending while it runs): the measured
        objectives at the study's first rung, the first as the rung score (what rungs rank on, the stand-in for
        the first objective while metrics still tie), the others as measured there. Every trial reaches the
        first rung; few reach the end. A finished trial scored at no rung gives its stored values.

        Args:
            trial: a trial of the study.
        """
        record = first_rung(trial)
        measured = [i for i, o in enumerate(self.objectives) if not o.known_before_training]
        if record is None:
            done = trial.state == optuna.trial.TrialState.COMPLETE and trial.values
            return [trial.values[i] for i in measured] if done else None
        return [record["score"] if i == 0 else self.objectives[i].measured(record) for i in measured]


def connect_storage(url: str, heartbeat_grace: float = defaults.HEARTBEAT_GRACE_S) -> optuna.storages.BaseStorage:
    """Open an Optuna storage URL, with a one-line error when it cannot be reached.

    Args:
        url: ``sqlite:///path``, ``postgresql://user:pass@host/db`` and other SQLAlchemy URLs.
        heartbeat_grace: seconds without a heartbeat after which a running trial counts as dead.
    """
    path = sqlite_path(url)
    try:
        storage = _open_rdb(url, path, heartbeat_grace)
    except AutopeftError:
        raise
    except Exception as exc:  # noqa: BLE001 - any driver error becomes one clear line
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise AutopeftError(f"storage {mask_url(url)} cannot be opened: {reason}") from None
    if path is not None:
        _write_ahead_log(storage.engine)
    return storage


def _open_rdb(url: str, path: Path | None, heartbeat_grace: float, attempts: int = 3) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage, creating its schema if needed. A SQLite file is locked meanwhile; on a
    server store two workers may create the schema at the same moment, and the one that loses the race
    (PostgreSQL says IntegrityError on its catalogue, or DuplicateTable) opens the storage again, now that
    the schema exists."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    def open_once() -> optuna.storages.RDBStorage:
        with store_lock(path):
            failpoints.pause("storage.create")
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs={"pool_pre_ping": True},
                heartbeat_interval=max(1, int(heartbeat_grace / HEARTBEATS_PER_GRACE)),
                grace_period=max(1, int(heartbeat_grace)),
            )

    for _ in range(attempts - 1):
        try:
            return open_once()
        except (IntegrityError, ProgrammingError) as exc:
            if isinstance(exc, ProgrammingError) and "already exists" not in str(exc):
                raise
            logger.info("storage %s: another process created the schema meanwhile; opening again", mask_url(url))
    return open_once()


def _write_ahead_log(engine: Any) -> None:
    """Open every SQLite connection in write-ahead-log mode, each commit still synced to disk.

    A trial writes each of its values in its own commit; with WAL a commit is one append and one
    sync instead of a rollback journal's several (measured: ``ask`` of 45 values 0.11 s -> 0.06 s),
    and readers (``autopeft status``, a second worker) no longer block the writer.
    """
    from sqlalchemy import event

    def pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    event.listen(engine, "connect", pragmas)
    engine.dispose()  # connections opened while the schema was created reconnect with the pragmas


@dataclass(frozen=True)
class Binding:
    """A spec resolved: task, backbone, space, budget, objectives and status quo (before any study is opened)."""

    task: TaskSpec
    info: BackboneInfo
    space: SearchSpace
    budget: Budget
    limit: int
    objectives: list[Objective]
    status_quo: StatusQuo


def bind(spec: StudySpec) -> Binding:
    """Resolve task, backbone, space, budget, objectives and status quo; fail fast when no configuration fits.

    Args:
        spec: the user's request.
    """
    task = get_task(spec.task)
    budget = parse_budget(spec.budget)
    objectives = parse_objectives(spec.objectives)
    info = backbone_info(spec.model, task.num_labels, spec.trust_remote_code)
    space = SearchSpace.load(spec.space, info)
    limit = budget.limit(info.backbone_params)
    smallest = space.minimal_count()
    if smallest > limit:
        raise BudgetError(
            f"--budget {budget} allows {limit:,} trainable parameters ({limit / info.backbone_params:.4%} of "
            f"{info.backbone_params:,}), but the smallest configuration of space {space.name!r} needs {smallest:,}"
        )
    status_quo = resolve_status_quo(spec.status_quo, info, limit)
    return Binding(task, info, space, budget, limit, objectives, status_quo)


def open_study(spec: StudySpec) -> BoundStudy:
    """Bind a spec and create its Optuna study, or continue the existing one of the same name.

    Args:
        spec: the user's request.
    """
    binding = bind(spec)
    storage = connect_storage(str(spec.storage), spec.heartbeat_grace)
    path = sqlite_path(str(spec.storage))
    with store_lock(path):  # processes starting together create one study
        return _create_or_continue(spec, binding, storage, wait_for_creator=path is None)


def _create_or_continue(
    spec: StudySpec, binding: Binding, storage: optuna.storages.BaseStorage, wait_for_creator: bool
) -> BoundStudy:
    directions = [o.direction for o in binding.objectives]
    try:
        study = optuna.create_study(study_name=spec.name, storage=storage, directions=directions)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=spec.name, storage=storage)
        if wait_for_creator:
            _wait_for_settings(study)
    settings = study_settings(spec, binding)
    if SPEC_ATTR in study.user_attrs:
        _check_same_settings(study, settings)
    if [d.name.lower() for d in study.directions] != directions:
        raise AutopeftError(f"study {spec.name!r} exists with other objectives; choose another --study name")
    if SPEC_ATTR not in study.user_attrs:
        write_settings(study, spec, settings, binding.limit, binding.info)
    b = binding
    return BoundStudy(spec, b.task, b.info, b.space, b.budget, b.limit, b.objectives, study, storage, b.status_quo)


def open_status_quo_study(study: optuna.Study, storage: optuna.storages.BaseStorage | str) -> optuna.Study:
    """The companion study holding a search's status-quo runs (created when missing).

    Args:
        study: the search's study.
        storage: its storage.
    """
    backend = connect_storage(storage) if isinstance(storage, str) else storage
    return optuna.create_study(
        study_name=study.study_name + STATUS_QUO_SUFFIX,
        storage=backend,
        directions=[d.name.lower() for d in study.directions],
        load_if_exists=True,
    )


CREATOR_WAIT_S = 60.0
"""How long a worker that finds a study just created by another waits for its settings (server stores)."""


def _wait_for_settings(study: optuna.Study, timeout: float = CREATOR_WAIT_S) -> None:
    """Wait until the worker that created ``study`` has written its settings (the spec comes last).

    On a server store another worker may create the study a moment before this one loads it; reading
    its settings before they are all written would compare against a half-written study or, worse,
    keep this worker's own selection seed. A study still without a spec after ``timeout`` (its
    creator died, or Optuna alone made it) is adopted as before.
    """
    deadline = time.monotonic() + timeout
    while SPEC_ATTR not in study.user_attrs and time.monotonic() < deadline:
        time.sleep(0.2)


def write_settings(
    study: optuna.Study, spec: StudySpec, settings: dict[str, Any], limit: int, info: BackboneInfo
) -> None:
    """Store what a new study was created with; the spec last, as the mark that all of it is there.

    Args:
        study: the study just created.
        spec: the request that created it.
        settings: its :func:`study_settings`.
        limit: the budget's parameter limit.
        info: the backbone.
    """
    study.set_user_attr("autopeft.space_yaml", settings["space"])
    study.set_user_attr("autopeft.task_yaml", settings["task"]["file"])
    study.set_user_attr("autopeft.limit", limit)
    study.set_user_attr("autopeft.backbone_params", info.backbone_params)
    study.set_user_attr("autopeft.objectives", settings["objectives"])
    study.set_user_attr(SETTINGS_ATTR, settings)
    study.set_user_attr(SELECTION_SEED_ATTR, spec.seed)
    study.set_user_attr(SPEC_ATTR, spec.to_dict())


SELECTION_SEED_ATTR = "autopeft.selection_seed"
"""The seed of the held-out selection part: the creating run's ``--seed``, kept for every later worker."""
SETTINGS_ATTR = "autopeft.settings"
"""What a study's trials depend on; a continued study must ask for the same."""


def study_settings(spec: StudySpec, binding: Binding) -> dict[str, Any]:
    """The settings a study's trials depend on (JSON-able): a study continues only with the same ones.

    Trials, workers, the sampler, seeds, folders and URLs may change between runs; these may not.

    Args:
        spec: the user's request.
        binding: what it resolved to.
    """
    task = binding.task
    return {
        "task": {"name": task.name, "file": task.source.read_text() if task.source else ""},
        "model": spec.model,
        "space": binding.space.path.read_text(),
        "budget": binding.limit,
        "objectives": [o.name for o in binding.objectives],
        "proxy": asdict(spec.proxy),
        "select_on": spec.select_on,
        "rungs": asdict(spec.rungs),
        "status_quo": binding.status_quo.config.to_dict() if binding.status_quo.config else None,
    }


_SETTING_NAMES = {
    "task": "the task (name or task file)",
    "model": "the model",
    "space": "the search space file's text",
    "budget": "the budget (its parameter limit)",
    "objectives": "the objectives",
    "proxy": "the proxy training settings",
    "select_on": "the split trials are scored on (--select-on)",
    "rungs": "the rungs (--first-rung, --reduction, --grace, --rung-score, --first-rung-cap)",
    "status_quo": "the status quo's configuration (--status-quo)",
}


def _check_same_settings(study: optuna.Study, asked: dict[str, Any]) -> None:
    """One-line error when a continued study was created with other settings than those asked now."""
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:  # written by an older autopeft: compare what it kept
        attrs = study.user_attrs
        stored = {
            "space": attrs.get("autopeft.space_yaml"),
            "budget": attrs.get("autopeft.limit"),
            "objectives": attrs.get("autopeft.objectives"),
        }
    asked = json.loads(json.dumps(asked))  # the stored form: tuples become lists
    differ = [name for name in _SETTING_NAMES if name in stored and stored[name] != asked[name]]
    if differ:
        details = []
        for name in differ:
            if name in ("budget", "model", "objectives"):
                details.append(f"{_SETTING_NAMES[name]} ({stored[name]} stored, {asked[name]} asked)")
            elif name in ("proxy", "rungs"):
                changed = sorted(k for k in asked[name] if stored[name].get(k) != asked[name][k])
                details.append(f"{_SETTING_NAMES[name]} ({', '.join(changed)})")
            else:
                details.append(_SETTING_NAMES[name])
        raise AutopeftError(
            f"study {study.study_name!r} exists with other settings: {'; '.join(details)} differ; "
            "continue it with the settings it was created with, or start a new study with --study NEW_NAME"
        )


def fail_stale_trials(study: optuna.Study) -> None:
    """Mark FAIL the running trials whose heartbeat stopped (their process died) so they are re-run.

    Args:
        study: the study.
    """
    import warnings

    _start_missing_heartbeats(study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _start_missing_heartbeats(study: optuna.Study) -> None:
    """Give a first heartbeat to running trials that have none, so that they can go stale.

    A process killed between asking for a trial and its first heartbeat leaves a RUNNING trial that
    Optuna never considers stale (it skips trials without a heartbeat row), and a resumed search
    would wait for it forever. A live worker beats right after asking, so its trial stays fresh.
    """
    # Optuna has no public API that tells whether a trial has a heartbeat (the stale-trial query is
    # private too): the storage's own models are read here, and only here.
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    storage = getattr(study._storage, "_backend", study._storage)  # under Optuna's cache wrapper
    if not isinstance(storage, optuna.storages.RDBStorage):
        return
    study_id = study._study_id
    with _create_scoped_session(storage.scoped_session, True) as session:
        running = (
            session.query(models.TrialModel)
            .filter(models.TrialModel.state == optuna.trial.TrialState.RUNNING)
            .filter(models.TrialModel.study_id == study_id)
            .all()
        )
        for trial in running:
            if not trial.heartbeats:
                session.add(models.TrialHeartbeatModel(trial_id=trial.trial_id))


def load_study(name: str, storage: str) -> optuna.Study:
    """Load an existing study, with a one-line error listing the known ones when it is missing.

    Args:
        name: the study's name.
        storage: its Optuna storage URL.
    """
    backend = connect_storage(storage)
    try:
        return optuna.load_study(study_name=name, storage=backend)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(backend)]
        known = f"; studies there: {', '.join(names)}" if names else "; the storage holds no study"
        raise AutopeftError(f"no study {name!r} in {mask_url(storage)}{known}") from None


SPLIT_LABELS = {
    "selection": "selection split",
    "validation": "validation split (selected and reported on the same data: optimistic)",
}
"""How each split a search can score on is named beside its figures."""


def scored_on(study: optuna.Study) -> str:
    """The split a study's trials were scored on: ``selection``, or ``validation`` (``--select-on validation``,
    and every study of autopeft before the selection split existed)."""
    return spec_of(study).get("select_on", "validation")


def trial_record(
    trial: optuna.trial.FrozenTrial,
    validation: dict[str, Any] | None = None,
    confirmations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One trial as the plain record printed by ``pareto``/``trials`` and written to ``pareto.csv``.

    ``metric`` is the task metric as the search measured it, on the split named by ``metric_split``;
    ``score`` is the first objective, what the search selects on (``neg_loss`` by default, or the
    metric itself). When the trial was confirmed, ``score_mean`` (what picks it), ``metric_mean`` and
    ``metric_seeds`` are the means over every seed on that split; ``validation``, when the trial was
    retrained, holds the validation-split figures to report.

    Args:
        trial: a trial of an autopeft study.
        validation: its retrained results on the validation split (``retrain.validation_results``).
        confirmations: its confirmation runs (``pareto.confirmation_runs``).
    """
    attrs = trial.user_attrs
    record = {
        "trial": trial.number,
        "state": trial.state.name,
        "metric": task_metric(trial),
        "score": trial.values[0] if trial.values else None,
        "metric_split": attrs.get("evaluated_on", "validation"),
        "metrics": attrs.get("metrics", {}),
        "trainable_params": attrs.get("trainable_params"),
        "trainable_fraction": attrs.get("trainable_fraction"),
        "head_params": attrs.get("head_params"),
        "params": attrs.get("config"),
    }
    if trial.values and len(trial.values) > 2:
        record["objectives"] = list(trial.values)
    if confirmations and trial.values:
        values, seeds = mean_values(trial, confirmations)
        metric, _ = mean_metric(trial, confirmations)
        record |= {
            "score_mean": values[0],
            "metric_mean": metric,
            "metric_seeds": seeds,
            "confirmations": confirmations,
        }
    if validation is not None:
        record["validation"] = validation
    if "fail_reason" in attrs:
        record["fail_reason"] = attrs["fail_reason"]
    for key in ("target_sparsity", "sparsity", "seconds", "steps", "rung_metrics", "rung_scores"):
        if key in attrs:
            record[key] = attrs[key]
    return record


def status_quo_record(run: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The status quo's run as the record ``pareto``, ``status``, ``report`` and MLflow show beside the Pareto set
    (``trial`` is ``"status_quo"``).

    Args:
        run: its run (:func:`autopeft.pareto.status_quo_run`).
    """
    attrs = run.user_attrs
    return {
        "trial": "status_quo",
        "status_quo": True,
        "label": attrs.get("label"),
        "note": attrs.get("note"),
        "state": run.state.name,
        "metric": attrs.get("metric"),
        "score": run.values[0] if run.values else None,
        "metric_split": attrs.get("evaluated_on", "selection"),
        "metrics": attrs.get("metrics", {}),
        "trainable_params": attrs.get("trainable_params"),
        "trainable_fraction": attrs.get("trainable_fraction"),
        "params": attrs.get("config"),
        "seed": attrs.get("seed"),
        "rungs": attrs.get("rungs", []),
        **({"objectives": list(run.values)} if run.values and len(run.values) > 2 else {}),
    }


def first_rung(trial: optuna.trial.FrozenTrial) -> dict[str, Any] | None:
    """A trial's record at the study's first rung (``None`` before it got there, or when it was scored at no rung).

    Args:
        trial: a trial of a study (running, finished or stopped).
    """
    return next((r for r in trial.user_attrs.get("rungs", ()) if r.get("level") == 0), None)


def trial_config(trial: optuna.trial.FrozenTrial) -> TrialConfig:
    """The configuration stored with a trial."""
    return TrialConfig.from_dict(trial.user_attrs["config"])


def confirmation_rounds(confirm: int, workers: int) -> int:
    """Rounds of training that the end of a search may add to its trials, at most: ``best`` and
    ``knee`` confirmed side by side, then the picks that moved to trials not yet confirmed (up to
    ``confirm`` runs in all; see :mod:`autopeft.execution.confirmations`).

    Counting the second round is the honest side: in the default MRPC search a confirmation moved a
    pick, and the third run took a round of its own (4.5 minutes left after the last trial where
    one round predicted 2.4).

    Args:
        confirm: the study's ``confirm`` (most confirmation runs).
        workers: trials at the same time.
    """
    first = min(confirm, 2)  # StudySpec keeps confirm >= 0
    return math.ceil(first / max(1, workers)) + math.ceil((confirm - first) / max(1, workers))


def spec_of(study: optuna.Study) -> dict[str, Any]:
    """The spec a study was created with (as stored; URLs masked)."""
    if SPEC_ATTR not in study.user_attrs:
        raise AutopeftError(f"study {study.study_name!r} was not written by autopeft")
    return study.user_attrs[SPEC_ATTR]


def study_backbone(spec: dict[str, Any]) -> str:
    """Where to load the backbone a stored spec names (:func:`autopeft.models.resolve_backbone`).

    Args:
        spec: a study's stored spec (:func:`spec_of`).
    """
    return resolve_backbone(spec["model"], spec.get("model_id"))


def dumps(data: Any) -> str:
    """Indented JSON, as printed by ``--json`` options."""
    return json.dumps(data, indent=2, default=str)
