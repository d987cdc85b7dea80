"""Binding a spec: its task, backbone, space, budget, objectives and status quo resolved, and its Optuna study
created or continued (a continued study must ask for the same settings; workers starting together on a server
store wait for the creator's)."""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from pydantic import BaseModel

from autopeft import keys
from autopeft.budget import Budget, parse_budget
from autopeft.errors import AutopeftError, BudgetError
from autopeft.locks import sqlite_path, store_lock
from autopeft.methods.config import TrialConfig
from autopeft.models import BackboneInfo, backbone_info
from autopeft.objectives import Objective, parse_objectives
from autopeft.references import StatusQuo, resolve_status_quo
from autopeft.runs_dir import RunsDir
from autopeft.samplers import KnownObjective, Observation, create_sampler
from autopeft.space import SearchSpace
from autopeft.study.spec import StudySpec, What, flag_of, option_of
from autopeft.study.storage import connect_storage
from autopeft.tasks import TaskSpec, get_task
from autopeft.training.memory import GIB, MemoryModel, parse_memory

STATUS_QUO_SUFFIX = ".status-quo"
"""The companion study of a search's status quo is named ``<study>.status-quo``."""


@dataclass(frozen=True)
class Binding:
    """A spec resolved: task, backbone, space, budget, objectives and status quo (before any study is opened).

    Attributes:
        task: the task.
        info: the backbone's description.
        space: the bound search space.
        budget: the parsed budget.
        limit: the largest allowed trainable-parameter count.
        objectives: the objectives, ``metric`` first.
        status_quo: the user's own default, trained beside the trials.
        memory: the backbone's calibrated memory model, when the memory objective or budget is asked for.
        memory_budget: the memory budget in bytes (``None``: none).
    """

    task: TaskSpec
    info: BackboneInfo
    space: SearchSpace
    budget: Budget
    limit: int
    objectives: list[Objective]
    status_quo: StatusQuo
    memory: MemoryModel | None
    memory_budget: int | None

    def predicted_memory(self, config: TrialConfig) -> int:
        """A configuration's predicted peak training memory in bytes (the memory model must exist).

        Args:
            config: a decoded configuration.
        """
        assert self.memory is not None
        return self.memory.predict(config, self.info, self.space.count(config))


@dataclass(frozen=True)
class BoundStudy(Binding):
    """A spec resolved against its backbone (a :class:`Binding`), its study opened: ready to search.

    Attributes:
        spec: the user's request.
        study: the Optuna study (created or continued).
        storage: the storage it lives in (heartbeats are recorded there).
    """

    spec: StudySpec
    study: optuna.Study
    storage: optuna.storages.BaseStorage

    @functools.cached_property
    def status_quo_study(self) -> optuna.Study:
        """The companion study holding the status quo's runs (not trials of the search: the sampler never sees
        them, they do not count in ``trials``, and they cannot be the knee)."""
        return open_status_quo_study(self.study, self.storage)

    @property
    def selection_seed(self) -> int:
        """The seed of the held-out selection part, the same for every worker of the study (whatever its ``--seed``)."""
        return int(self.study.user_attrs.get(keys.SELECTION_SEED, self.spec.how.seed))

    def exact_values(self, config: TrialConfig) -> dict[str, float]:
        """The objectives known before training, by name, in the units the study stores.

        The one formula of each: the value a trial stores and the value the sampler assumes both
        come from here. ``params``: the PEFT modules' trainable count as a fraction of the
        backbone; ``sparsity``: the fraction of the encoder-layer Linear weights the configuration
        prunes (its target, exact before training; the measured value is kept beside it).

        Args:
            config: a decoded configuration.
        """
        values = {
            "params": self.info.fraction(self.space.count(config)),
            "sparsity": self.space.target_sparsity(config),
        }
        if self.memory is not None:
            values["memory"] = self.predicted_memory(config) / GIB
        return values

    def known_objectives(self) -> dict[int, KnownObjective]:
        """The objectives exact before training, by index, as the sampler reads them from sampled values."""

        def exact(name: str) -> Callable[[dict[str, Any]], float]:
            def value(params: dict[str, Any]) -> float:
                config = self.space.decode(params)
                return 0.0 if config is None else self.exact_values(config)[name]

            return value

        worst = {"params": self.info.fraction(self.limit), "sparsity": 0.0, "memory": self.worst_memory()}
        return {
            i: KnownObjective(exact(o.name), worst[o.name])
            for i, o in enumerate(self.objectives)
            if o.known_before_training
        }

    def worst_memory(self) -> float | None:
        """The most memory (GiB) a feasible configuration may need: the memory budget, else the model's bound for any
        configuration (the hypervolume's reference: one value for the whole study)."""
        if self.memory is None:
            return None
        return (self.memory_budget or self.memory.upper_bound(self.info)) / GIB

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
        and what it learns of each trial: its scores at the highest fidelity it reached)."""
        known = self.known_objectives()
        how = self.spec.how
        return create_sampler(
            how.sampler, self.space, self.limit, how.seed, known, self.observed_values, start_load=how.start_load
        )

    def observed_values(self, trial: optuna.trial.FrozenTrial) -> Observation | None:
        """What the sampler learns of a trial (``None`` while nothing: it is pending while it runs): its measured
        objectives at the highest fidelity it has reached, with that fidelity. The first objective is the rung
        score there (what rungs rank on: the stand-in for the metric while metrics still tie), the others as
        measured there. A trial trained to the end is learnt at the end (fidelity 1); one still running, or
        stopped at a rung, at its last rung. A finished trial scored at no rung gives its stored values.

        Args:
            trial: a trial of the study.
        """
        from autopeft.training.proxy import rung_score

        records = trial.user_attrs.get(keys.RUNGS) or ()
        measured = [i for i, o in enumerate(self.objectives) if not o.known_before_training]
        done = trial.state == optuna.trial.TrialState.COMPLETE and trial.values
        if done:
            metrics = trial.user_attrs.get(keys.METRICS)
            if not records or metrics is None:
                return Observation([trial.values[i] for i in measured])
            score = rung_score(metrics, self.task.metric, self.spec.what.rungs.score)
            return Observation([score if i == 0 else trial.values[i] for i in measured])
        if not records:
            return None
        last = records[-1]
        values = [last["score"] if i == 0 else self.objectives[i].measured(last) for i in measured]
        return Observation(values, float(last["fraction"]))


def bind(spec: StudySpec) -> Binding:
    """Resolve task, backbone, space, budget, objectives and status quo; fail fast when no configuration fits.

    Args:
        spec: the user's request.
    """
    what = spec.what
    task = get_task(what.task)
    budget = parse_budget(what.budget)
    objectives = parse_objectives(what.objectives)
    info = backbone_info(what.model, task.num_labels, what.trust_remote_code)
    space = SearchSpace.load(what.space, info)
    limit = budget.limit(info.backbone_params)
    smallest = space.minimal_count()
    if smallest > limit:
        raise BudgetError(
            f"--budget {budget} allows {limit:,} trainable parameters ({limit / info.backbone_params:.4%} of "
            f"{info.backbone_params:,}), but the smallest configuration of space {space.name!r} needs {smallest:,}"
        )
    status_quo = resolve_status_quo(what.status_quo, info, limit)
    memory, memory_budget = None, None
    if what.memory_budget or any(o.name == "memory" for o in objectives):
        memory = bound_memory_model(spec, task, info)
        if what.memory_budget:
            memory_budget = parse_memory(what.memory_budget)
            check_memory_budget(space, memory, memory_budget, limit)
    return Binding(task, info, space, budget, limit, objectives, status_quo, memory, memory_budget)


def bound_memory_model(spec: StudySpec, task: TaskSpec, info: BackboneInfo) -> MemoryModel:
    """The backbone's calibrated memory model at the spec's memory shape (cached in the runs folder).

    Args:
        spec: the user's request.
        task: its task.
        info: the backbone.
    """
    from autopeft.training.proxy import memory_model

    training = spec.what.training
    shape = training.memory_shape(spec.what.memory_shape)
    cache = RunsDir.at(spec.where.runs_dir).memory_cache
    return memory_model(spec.what.model, task.num_labels, training.settings(), shape, str(cache))


def check_memory_budget(space: SearchSpace, memory: MemoryModel, most: int, limit: int) -> None:
    """Cap the space at the memory budget; fail fast when even the least memory any configuration needs exceeds it.

    Args:
        space: the bound space.
        memory: the memory model.
        most: the budget in bytes.
        limit: the parameter budget.
    """
    least = memory.shared(space.info) + min(memory.entry.values())
    if least > most:
        raise BudgetError(
            f"--memory-budget {most / GIB:.2f} GiB is below what every configuration needs at {memory.shape} "
            f"({least / GIB:.2f} GiB: the backbone, the head and the top layer's activations)"
        )
    space.cap_memory(lambda config: memory.predict(config, space.info, space.count(config)), most)


def _stored_memory_model(study: optuna.Study, binding: Binding) -> Binding:
    """The binding with the memory model its study stores (a continued study predicts as it always did, whatever
    this machine's calibration); a new study stores the one it was bound with.

    Args:
        study: the created or loaded study.
        binding: the spec as bound here.
    """
    if binding.memory is None:
        return binding
    stored = study.user_attrs.get(keys.MEMORY_MODEL)
    if stored is None:
        study.set_user_attr(keys.MEMORY_MODEL, binding.memory.to_dict())
        return binding
    memory = MemoryModel.from_dict(stored)
    if binding.memory_budget is not None:
        check_memory_budget(binding.space, memory, binding.memory_budget, binding.limit)
    return dataclasses.replace(binding, memory=memory)


def open_study(spec: StudySpec) -> BoundStudy:
    """Bind a spec and create its Optuna study, or continue the existing one of the same name.

    Args:
        spec: the user's request.
    """
    binding = bind(spec)
    storage = connect_storage(str(spec.where.storage), spec.how.heartbeat_grace)
    path = sqlite_path(str(spec.where.storage))
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
    binding = _stored_memory_model(study, binding)
    settings = study_settings(spec, binding)
    if keys.SPEC in study.user_attrs:
        _check_same_settings(study, settings)
    if [d.name.lower() for d in study.directions] != directions:
        raise AutopeftError(f"study {spec.name!r} exists with other objectives; choose another --study name")
    if keys.SPEC not in study.user_attrs:
        write_settings(study, spec, settings, binding.limit, binding.info)
    return BoundStudy(**vars(binding), spec=spec, study=study, storage=storage)


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
    while keys.SPEC not in study.user_attrs and time.monotonic() < deadline:
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
    study.set_user_attr(keys.SPACE_YAML, settings["space"])
    study.set_user_attr(keys.TASK_YAML, settings["task"]["file"])
    study.set_user_attr(keys.LIMIT, limit)
    study.set_user_attr(keys.BACKBONE_PARAMS, info.backbone_params)
    study.set_user_attr(keys.OBJECTIVES, settings["objectives"])
    study.set_user_attr(keys.SETTINGS, settings)
    study.set_user_attr(keys.SELECTION_SEED, spec.how.seed)
    study.set_user_attr(keys.SPEC, spec.to_dict())


def study_settings(spec: StudySpec, binding: Binding) -> dict[str, Any]:
    """The settings a study's trials depend on (JSON-able): every field of the spec's ``What`` that must stay the
    same when the study continues, some as what they resolved to (the task and space files' texts, the budget's
    parameter limit, the status quo's configuration, the objectives' names).

    Args:
        spec: the user's request.
        binding: what it resolved to.
    """
    what = spec.what
    settings = {
        name: getattr(what, name).model_dump(mode="json") if isinstance(getattr(what, name), BaseModel)
        else getattr(what, name)
        for name in resumed_fields()
    }  # fmt: skip
    task = binding.task
    settings["task"] = {"name": task.name, "file": task.source.read_text() if task.source else ""}
    settings["space"] = binding.space.path.read_text()
    settings["budget"] = binding.limit
    settings["objectives"] = [o.name for o in binding.objectives]
    quo = binding.status_quo.config
    settings["status_quo"] = quo.to_dict() if quo else None
    return settings


def resumed_fields() -> list[str]:
    """The fields of ``What`` a continued study must ask for again (all but those declared otherwise)."""
    return [name for name, info in What.model_fields.items() if option_of(info) is None or option_of(info).resume]


LEGACY_SETTINGS = {"proxy": "training", "select_on": "scored_on"}
"""Settings stored by earlier versions under other names."""


def _check_same_settings(study: optuna.Study, asked: dict[str, Any]) -> None:
    """One-line error when a continued study was created with other settings than those asked now (settings a
    study of an earlier version did not store are not compared)."""
    stored = study.user_attrs.get(keys.SETTINGS)
    if stored is None:  # written by a much older autopeft: compare what it kept
        attrs = study.user_attrs
        stored = {
            "space": attrs.get(keys.SPACE_YAML),
            "budget": attrs.get(keys.LIMIT),
            "objectives": attrs.get(keys.OBJECTIVES),
        }
    stored = {LEGACY_SETTINGS.get(k, k): v for k, v in stored.items()}
    asked = json.loads(json.dumps(asked))  # the stored form: tuples become lists
    differ = [name for name in asked if name in stored and stored[name] != asked[name]]
    if differ:
        details = []
        for name in differ:
            flag = _flag(name)
            if isinstance(asked[name], dict) and isinstance(stored[name], dict) and name != "task":
                changed = sorted(k for k in asked[name] if stored[name].get(k) != asked[name][k])
                details.append(f"{flag} ({', '.join(changed)})")
            elif name in ("budget", "model", "objectives"):
                details.append(f"{flag} ({stored[name]} stored, {asked[name]} asked)")
            else:
                details.append(flag)
        raise AutopeftError(
            f"study {study.study_name!r} exists with other settings: {'; '.join(details)} differ; "
            "continue it with the settings it was created with, or start a new study with --study NEW_NAME"
        )


def _flag(name: str) -> str:
    """How a setting is named in a message: its flag, or the section's name."""
    info = What.model_fields[name]
    option = option_of(info)
    return flag_of(name, option) if option else f"the {name} settings"
