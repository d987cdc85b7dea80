"""The study: one object holding task, model, space, budget, objectives, storage and tracking.

A :class:`StudySpec` is what the user asked for; :func:`open_study` binds it (backbone, space,
budget limit) and creates or continues the Optuna study in its RDB storage. The spec, the space
file's text and the budget limit are stored as study user attributes, so ``pareto``, ``export`` and
other commands need only the study's name and storage.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna

from autopeft import defaults
from autopeft.budget import Budget, parse_budget
from autopeft.errors import AutopeftError, BudgetError
from autopeft.execution.early_stopping import EarlyStopping
from autopeft.models import BackboneInfo, backbone_info, default_model
from autopeft.objectives import Objective, parse_objectives
from autopeft.space import SearchSpace, TrialConfig
from autopeft.tasks import TaskSpec, get_task, task_reference
from autopeft.training import ProxySettings

SPEC_ATTR = "autopeft.spec"
HEARTBEAT_SECONDS = 10
"""How often the trials in flight are marked alive in the storage."""


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


@dataclass
class StudySpec:
    """What a search is asked to do. Every field has a CLI option of the same name.

    Attributes:
        task: built-in task name, or a task file (stored as its absolute path).
        budget: trainable-parameter budget (``0.5%``, ``0.005``, ``120k``).
        model: HF id or folder of the backbone (default: the packaged all-MiniLM-L6-v2).
        space: space file or shipped space name.
        objectives: ``metric,params`` or an objectives file.
        sampler: ``botorch``, ``random``, ``tpe`` or ``nsga2``.
        trials: finished trials the study should hold.
        workers: trials run at the same time.
        seed: seed of the sampler and of each trial's training (plus the trial number).
        data_dir: local GLUE folder (``$AUTOPEFT_DATA_DIR``); ``None`` uses the hub.
        runs_dir: folder for everything a study writes.
        storage: Optuna storage URL (default: SQLite in ``runs_dir``).
        tracking_uri: MLflow tracking URI (default: SQLite in ``runs_dir``).
        study_name: the study's name (default derived from task, model, budget and space).
        proxy: how each trial is trained.
        early_stopping: when dominated trials stop early (``None``: every trial trains to the end).
        gpus_per_trial: GPUs per trial, fractions allowed (0 on CPU machines).
        ray_address: an existing Ray cluster (``auto``, ``ray://host:port``); ``None`` starts one.
        trust_remote_code: allow custom modelling code of the model.
    """

    task: str
    budget: str
    model: str = field(default_factory=default_model)
    space: str = "default"
    objectives: str = "metric,params"
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
    early_stopping: EarlyStopping | None = None
    gpus_per_trial: float = 0.0
    ray_address: str | None = None
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise AutopeftError(f"--trials must be at least 1, got {self.trials}")
        if self.workers < 1:
            raise AutopeftError(f"--workers must be at least 1, got {self.workers}")
        if self.gpus_per_trial < 0:
            raise AutopeftError(f"--gpus-per-trial must not be negative, got {self.gpus_per_trial}")
        if self.proxy.epochs <= 0:
            raise AutopeftError(f"--epochs must be positive, got {self.proxy.epochs}")
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
        """JSON-able form (stored with the study; URLs masked)."""
        data = asdict(self)
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
    """

    spec: StudySpec
    task: TaskSpec
    info: BackboneInfo
    space: SearchSpace
    budget: Budget
    limit: int
    objectives: list[Objective]
    study: optuna.Study

    def fraction(self, params: int) -> float:
        """Trainable fraction of ``params`` relative to the backbone."""
        return params / self.info.backbone_params

    def known_objectives(self) -> dict[int, Any]:
        """Objectives whose value is exact before training, by index.

        ``params``: the count relative to the budget limit; ``sparsity``: the configuration's target
        sparsity (what pruning sets to zero, over the same weights the measured value counts).
        """
        from autopeft.samplers import budget_fraction

        def target(params: dict) -> float:
            config = self.space.decode(params)
            return 0.0 if config is None else self.space.target_sparsity(config)

        exact = {"params": budget_fraction(self.space, self.limit), "sparsity": target}
        return {i: exact[o.name] for i, o in enumerate(self.objectives) if o.name in exact}

    def objective_values(self, result: dict[str, Any]) -> list[float]:
        """The study's objective values from a trial's result fields."""
        return [float(result[o.field]) for o in self.objectives]


def connect_storage(url: str) -> optuna.storages.BaseStorage:
    """Open an Optuna storage URL, with a one-line error when it cannot be reached.

    Args:
        url: ``sqlite:///path``, ``postgresql://user:pass@host/db`` and other SQLAlchemy URLs.
    """
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs={"pool_pre_ping": True},
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=3 * HEARTBEAT_SECONDS,
        )
    except Exception as exc:  # noqa: BLE001 - any driver error becomes one clear line
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise AutopeftError(f"storage {mask_url(url)} cannot be opened: {reason}") from None


def bind(spec: StudySpec) -> tuple[TaskSpec, BackboneInfo, SearchSpace, Budget, int, list[Objective]]:
    """Resolve task, backbone, space, budget and objectives; fail fast when no configuration fits.

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
    return task, info, space, budget, limit, objectives


def open_study(spec: StudySpec) -> BoundStudy:
    """Bind a spec and create its Optuna study, or continue the existing one of the same name.

    Args:
        spec: the user's request.
    """
    task, info, space, budget, limit, objectives = bind(spec)
    storage = connect_storage(str(spec.storage))
    directions = [o.direction for o in objectives]
    study = optuna.create_study(study_name=spec.name, storage=storage, directions=directions, load_if_exists=True)
    if [d.name.lower() for d in study.directions] != directions:
        raise AutopeftError(f"study {spec.name!r} exists with other objectives; choose another --study name")
    if SPEC_ATTR not in study.user_attrs:
        study.set_user_attr(SPEC_ATTR, spec.to_dict())
        study.set_user_attr("autopeft.space_yaml", space.path.read_text())
        study.set_user_attr("autopeft.task_yaml", task.source.read_text() if task.source else "")
        study.set_user_attr("autopeft.limit", limit)
        study.set_user_attr("autopeft.backbone_params", info.backbone_params)
        study.set_user_attr("autopeft.objectives", [o.name for o in objectives])
    return BoundStudy(spec, task, info, space, budget, limit, objectives, study)


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


def trial_record(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """One trial as the plain record printed by ``pareto``/``trials`` and written to ``pareto.csv``.

    Args:
        trial: a trial of an autopeft study.
    """
    attrs = trial.user_attrs
    record = {
        "trial": trial.number,
        "state": trial.state.name,
        "metric": trial.values[0] if trial.values else attrs.get("metric"),
        "metrics": attrs.get("metrics", {}),
        "trainable_params": attrs.get("trainable_params"),
        "trainable_fraction": attrs.get("trainable_fraction"),
        "head_params": attrs.get("head_params"),
        "params": attrs.get("config"),
    }
    if trial.values and len(trial.values) > 2:
        record["objectives"] = list(trial.values)
    if "fail_reason" in attrs:
        record["fail_reason"] = attrs["fail_reason"]
    for key in ("target_sparsity", "sparsity", "seconds", "steps", "rung_metrics", "rung_scores"):
        if key in attrs:
            record[key] = attrs[key]
    return record


def trial_config(trial: optuna.trial.FrozenTrial) -> TrialConfig:
    """The configuration stored with a trial."""
    return TrialConfig.from_dict(trial.user_attrs["config"])


def spec_of(study: optuna.Study) -> dict[str, Any]:
    """The spec a study was created with (as stored; URLs masked)."""
    if SPEC_ATTR not in study.user_attrs:
        raise AutopeftError(f"study {study.study_name!r} was not written by autopeft")
    return study.user_attrs[SPEC_ATTR]


def dumps(data: Any) -> str:
    """Indented JSON, as printed by ``--json`` options."""
    return json.dumps(data, indent=2, default=str)
