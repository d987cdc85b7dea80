"""autopeft as a service: searches submitted to a Ray cluster's own job server, watched, stopped, collected.

Ray's Job Submission API (the dashboard's port, 8265 by default) runs each search as a job: its
entrypoint is ``autopeft search`` with the user's options, run on the cluster in a folder that
Ray ships from the submitting machine (the runtime environment's ``working_dir``). That folder
holds the files the search names (task file and the data files it lists, space, objectives),
under fixed names, and the entrypoint's options point at them. The study's truth stays in the
Optuna storage, which must therefore be one the cluster reaches (PostgreSQL), as must the MLflow
server: a stopped job keeps every finished trial, and the same submission continues the study.

Security: the cluster's token authentication (``RAY_AUTH_MODE=token`` with ``RAY_AUTH_TOKEN`` or
``RAY_AUTH_TOKEN_PATH``) is Ray's own; the token is read from the environment or the file, never
printed. Storage and tracking URLs travel to the job in its environment variables, not on its
command line, and are printed masked. A job reads spec files only from the folder it shipped,
besides the data folder and the model: :func:`confinement_problem` is checked before submitting
and again by the job itself (``AUTOPEFT_CONFINED``).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopeft import keys
from autopeft.errors import AutopeftError, ConfigError
from autopeft.study import StudySpec, mask_url

if TYPE_CHECKING:
    from autopeft.study import StudyView

STUDY_KEY = keys.JOB_STUDY
"""Job metadata key naming the study a job runs (jobs without it are not autopeft's)."""
CONFINED_ENV = "AUTOPEFT_CONFINED"
"""Set in a submitted job: the search reads spec files only inside its working folder (and the data folder)."""
STORAGE_ENV, TRACKING_ENV = "AUTOPEFT_STORAGE", "MLFLOW_TRACKING_URI"
"""Where a job (and the CLI, when no option is given) finds its storage and tracking URLs."""
SHIPPED_TASK, SHIPPED_SPACE, SHIPPED_OBJECTIVES, SHIPPED_SPEC = "task", "space.yaml", "objectives.yaml", "spec.json"
"""Names of the shipped files (the task file keeps its name inside the ``task`` folder)."""


def require_cluster_stores(storage: str | None, tracking_uri: str | None) -> None:
    """A one-line error unless the storage and the tracking are servers every node can reach.

    Args:
        storage: the Optuna storage URL.
        tracking_uri: the MLflow tracking URI.
    """
    if not storage:
        raise AutopeftError(
            f"a submitted study needs a storage the cluster reaches: --storage postgresql://... (or ${STORAGE_ENV})"
        )
    if storage.startswith("sqlite:") or "://" not in storage:
        raise AutopeftError(
            f"--storage {mask_url(storage)}: a local SQLite file lives on this machine only, the cluster's workers "
            "cannot write it; use a PostgreSQL URL (postgresql://user:password@host/db)"
        )
    if not tracking_uri:
        raise AutopeftError(
            f"a submitted study needs an MLflow server the cluster reaches: --tracking-uri http://... "
            f"(or ${TRACKING_ENV})"
        )
    if not tracking_uri.startswith(("http://", "https://")):
        raise AutopeftError(
            f"--tracking-uri {mask_url(tracking_uri)}: a local MLflow store lives on this machine only; "
            "use an MLflow server URL (http://host:5000)"
        )


def _inside(path: Path, roots: list[Path]) -> bool:
    resolved = path.resolve()
    return any(resolved == root or root in resolved.parents for root in roots)


def spec_files(spec: StudySpec) -> dict[str, Path]:
    """The files a spec makes a search read, besides the model and the data folder: task, its data, space, objectives.

    Args:
        spec: a validated spec.
    """
    from autopeft.objectives import OBJECTIVES_DIR, objectives_file
    from autopeft.space import SPACES_DIR, resolve_space_path
    from autopeft.tasks import TASKS_DIR, get_task

    def own(path: Path) -> bool:  # autopeft's own files are installed on every node: they need no shipping
        return path.resolve().parent in (TASKS_DIR.resolve(), SPACES_DIR.resolve(), OBJECTIVES_DIR.resolve())

    what = spec.what
    files: dict[str, Path] = {}
    task = Path(what.task)
    if task.is_file() and not own(task):
        files["task"] = task.resolve()
        loaded = get_task(what.task)
        if loaded.paths_relative_to == "file":
            for split in ("train", "validation", "test", "selection"):
                path = loaded.split_path(split, what.data_dir)
                if path is not None:
                    files[f"task.{split}"] = path
    space = resolve_space_path(what.space)
    if not own(space):
        files["space"] = space.resolve()
    objectives = objectives_file(what.objectives)
    if objectives is not None and not own(objectives):
        files["objectives"] = objectives.resolve()
    return files


def confinement_problem(spec: StudySpec, roots: list[Path]) -> str | None:
    """``"<what>: <path> lies outside ..."`` when a spec makes the search read a file outside ``roots``.

    Args:
        spec: a validated spec.
        roots: the folders it may read (the shipped folder, the data folder).
    """
    roots = [Path(r).resolve() for r in roots]
    for what, path in spec_files(spec).items():
        if not _inside(path, roots):
            shown = what.replace("task.", "task file's ")
            return f"{shown}: {path} lies outside the submitted folder and the data folder"
    return None


def check_confined(spec: StudySpec) -> None:
    """In a submitted job (``AUTOPEFT_CONFINED`` set): refuse spec files outside its folder and the data folder."""
    if not os.environ.get(CONFINED_ENV):
        return
    roots = [Path.cwd()] + ([Path(spec.what.data_dir)] if spec.what.data_dir else [])
    problem = confinement_problem(spec, roots)
    if problem:
        raise ConfigError(f"submitted search: {problem}")


def ship(spec: StudySpec, folder: Path) -> Path:
    """Copy the files a spec names into ``folder`` and write the resolved spec there (``spec.json``), pointing at
    the copies: the job's ``autopeft search --spec spec.json`` runs exactly what was validated here.

    A task file goes with the data files it names, which must lie in the task file's folder (a ``../`` path out
    of it gets a one-line error): the shipped task keeps that layout. The spec file holds no store URL (they
    reach the job in its environment) and no runs folder (the job writes in its own).

    Args:
        spec: a validated spec.
        folder: an empty folder (the job's working folder).

    Returns:
        The spec file.
    """
    files = spec_files(spec)
    shipped: dict[str, Any] = {}
    if "task" in files:
        home = files["task"].parent
        for what, path in files.items():
            if not what.startswith("task"):
                continue
            if not _inside(path, [home]):
                split = what.removeprefix("task.")
                raise ConfigError(
                    f"{files['task']}: {split}: {path} lies outside the task file's folder; a submitted task ships "
                    "that folder only (move the data beside the task file, or use a data_dir task)"
                )
            target = folder / SHIPPED_TASK / path.relative_to(home)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        shipped["task"] = f"{SHIPPED_TASK}/{files['task'].name}"
    for what, name in (("space", SHIPPED_SPACE), ("objectives", SHIPPED_OBJECTIVES)):
        if what in files:
            shutil.copyfile(files[what], folder / name)
            shipped[what] = name
    if Path(spec.what.model).exists():
        shipped["model"] = str(Path(spec.what.model).resolve())  # a folder on every node (else a hub id)
    flat = {**spec.flat(), **shipped, "study": spec.name, "ray-address": "auto"}
    for dropped in ("storage", "tracking-uri", "runs-dir"):
        flat.pop(dropped, None)
    path = folder / SHIPPED_SPEC
    path.write_text(json.dumps(flat, indent=1))
    return path


def _client(address: str):
    """A job-submission client of the cluster at ``address``, or a one-line error."""
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # noqa: BLE001 - connection and authentication errors of any kind: one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise AutopeftError(f"--address {mask_url(address)}: cannot reach the Ray job server: {first}") from None


NO_AGENT_YET = "No available agent to submit job"
"""Ray's job server answers this while its head's agent has not registered yet (a head that just started)."""
AGENT_WAIT_S = 60.0
AGENT_RETRY_S = 3.0


def submit(address: str, spec: StudySpec, folder: Path) -> str:
    """Submit a validated search as a Ray job running the spec shipped in ``folder``; return the job's id. While
    the server says it has no agent yet, the submission is retried (each retry printed) for up to a minute.

    Args:
        address: the job server (``http://head:8265``).
        spec: the validated spec (its storage and tracking must be servers).
        folder: the shipped working folder (:func:`ship`).
    """
    import shlex

    where = spec.where
    require_cluster_stores(where.storage, where.tracking_uri)
    client = _client(address)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    env = {STORAGE_ENV: str(where.storage), TRACKING_ENV: str(where.tracking_uri), CONFINED_ENV: "1"}
    metadata = {
        STUDY_KEY: spec.name,
        keys.JOB_TRIALS: str(spec.how.trials),
        keys.JOB_WORKERS: str(spec.how.workers),
        keys.JOB_STORAGE: mask_url(str(where.storage)),
    }
    entrypoint = shlex.join(["autopeft", "search", "--spec", SHIPPED_SPEC])
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            return client.submit_job(
                entrypoint=entrypoint,
                submission_id=f"autopeft-{spec.name[:60]}-{stamp}-{os.getpid()}",
                runtime_env={"working_dir": str(folder), "env_vars": env},
                metadata=metadata,
            )
        except Exception as exc:  # noqa: BLE001 - the server's refusal, in one line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            if NO_AGENT_YET in first and time.monotonic() < deadline:
                print(f"the job server has no agent yet (a head that just started); retrying: {first}", file=sys.stderr)
                time.sleep(AGENT_RETRY_S)
                continue
            raise AutopeftError(f"the job server refused the submission: {first}") from None


def study_counts(view: StudyView) -> dict[str, int]:
    """Trials of a study by state: ``finished``, ``pruned``, ``running`` (waiting ones too), ``failed``."""
    from optuna.trial import TrialState

    states = [t.state for t in view.trials]
    return {
        "finished": states.count(TrialState.COMPLETE),
        "pruned": states.count(TrialState.PRUNED),
        "running": states.count(TrialState.RUNNING) + states.count(TrialState.WAITING),
        "failed": states.count(TrialState.FAIL),
    }


def study_status(view: StudyView, target: int | None = None, workers: int | None = None) -> dict[str, Any]:
    """Where a study stands, from its storage alone: counts by state, time left, the Pareto set and the status quo.

    Args:
        view: the study.
        target: done trials it should hold (default: its spec's ``trials``).
        workers: trials at the same time (default: its spec's ``workers``).
    """
    from autopeft.timing import study_seconds_left

    how = view.spec.how.model_copy(update={"workers": workers}) if workers else view.spec.how
    target = target or how.trials
    counts = study_counts(view)
    done = counts["finished"] + counts["pruned"]
    left = study_seconds_left(view, how, target)
    if done >= target and view.status_quo is not None and view.attrs.get(keys.SEARCH_RUNS):
        left = 0.0
    pareto = [view.record(t.number) for t in view.pareto_trials]
    quo = view.status_quo_record()
    return {"study": view.name, "target": target, **counts, "seconds_left": left, "pareto": pareto,
            "status_quo": quo, "confirming": view.attrs.get(keys.CONFIRMING) or []}  # fmt: skip


def list_jobs(address: str, storage: str | None = None) -> list[dict[str, Any]]:
    """autopeft's jobs on a cluster, newest first: id, study, state, trials finished/target, Pareto size, start.

    Trial counts are read from ``storage`` when it is the store a job names (else left empty).

    Args:
        address: the job server.
        storage: the Optuna storage URL the studies live in.
    """
    import optuna

    from autopeft.study import StudyView, connect_storage

    client = _client(address)
    jobs = [j for j in client.list_jobs() if (j.metadata or {}).get(STUDY_KEY)]
    backend = connect_storage(storage) if storage else None
    names = {s.study_name for s in optuna.get_all_study_summaries(backend)} if backend else set()
    rows = []
    for job in sorted(jobs, key=lambda j: j.start_time or 0, reverse=True):
        study_name = job.metadata[STUDY_KEY]
        row = {
            "job": job.submission_id,
            "study": study_name,
            "state": str(job.status.value if hasattr(job.status, "value") else job.status),
            "finished": None,
            "target": int(job.metadata.get(keys.JOB_TRIALS, 0)),
            "pareto_size": None,
            "started": (
                datetime.datetime.fromtimestamp(job.start_time / 1000).isoformat(timespec="seconds")
                if job.start_time
                else None
            ),
        }
        same_store = storage and mask_url(storage) == job.metadata.get(keys.JOB_STORAGE)
        if same_store and study_name in names:
            view = StudyView(optuna.load_study(study_name=study_name, storage=backend))
            counts = study_counts(view)
            row |= {"finished": counts["finished"] + counts["pruned"], "pareto_size": len(view.pareto)}
        rows.append(row)
    return rows


def job_logs(address: str, job: str, follow: bool = False) -> Iterator[str]:
    """A job's log: all of it, or (``follow``) everything up to now and then each new part until the job ends.

    Args:
        address: the job server.
        job: the job id.
        follow: keep reading until the job ends.
    """
    client = _client(address)
    _known_job(client, job)
    if not follow:
        yield client.get_job_logs(job)
        return
    import asyncio

    # The SDK's tail is asynchronous: run it in a private loop, handing over chunks as they arrive.
    loop = asyncio.new_event_loop()
    stream = client.tail_job_logs(job)
    try:
        while True:
            try:
                yield loop.run_until_complete(anext(stream))
            except StopAsyncIteration:
                return
    finally:
        loop.close()


def _known_job(client, job: str):
    try:
        return client.get_job_info(job)
    except Exception:  # noqa: BLE001 - the SDK raises a bare RuntimeError for a job it does not know
        raise AutopeftError(f"no job {job!r} on this cluster (autopeft jobs lists them)") from None


def stop_job(address: str, job: str, wait_seconds: float = 60.0) -> str:
    """Stop a job and wait until it has stopped; return its final state.

    The study keeps every finished trial; its running trials are failed by their stopped
    heartbeats, and submitting the same search again continues the study to its target.

    Args:
        address: the job server.
        job: the job id.
        wait_seconds: how long to wait for the job to end.
    """
    client = _client(address)
    _known_job(client, job)
    client.stop_job(job)
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        status = client.get_job_status(job)
        if status.is_terminal():
            return str(status.value)
        time.sleep(1.0)
    return str(client.get_job_status(job).value)
