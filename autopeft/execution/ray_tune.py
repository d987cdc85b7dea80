"""Run trials with Ray Tune, proposals coming from the Optuna study (its storage is the truth).

:class:`StudySearcher` is a Tune ``Searcher`` that asks the Optuna study for each new trial and tells it the
result, so every finished trial is in the RDB storage the moment it ends, and a re-run of the same command
continues where the last one stopped. Each Tune trial trains one configuration on the full schedule; at each
rung it asks the study's :class:`~autopeft.execution.rungs.RungBoard` (a Ray actor) whether to go on, reports
the rung (stored on the running trial at once, so the sampler learns from it), and continues in place or
stops. The status quo runs first, as an entry that never stops, in the companion study. Once the study holds
its trials, the searcher hands out the confirmation runs
(:class:`~autopeft.execution.confirmations.Confirmations`) round by round, so they train on the same reused
worker processes, which have imported the libraries and read the data already. Heartbeats mark the trials in
flight, so trials of a killed search are recognised as stale and failed later (they did not fail on their own:
their configurations may be trained again).
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from autopeft import keys
from autopeft.execution import trials
from autopeft.execution.confirmations import ConfirmationRun, Confirmations
from autopeft.execution.rungs import RungBoard
from autopeft.methods.config import TrialConfig
from autopeft.results import STATUS_QUO_KEY as STATUS_QUO
from autopeft.study import DONE as DONE_STATES
from autopeft.study import HEARTBEATS_PER_GRACE, BoundStudy, fail_stale_trials, mask_url
from autopeft.training import ProxyRequest

RUNG_KEY, EVENT_KEY = "autopeft_rung", "autopeft_event"
"""Keys of an intermediate result: the rung's record (JSON) and a line to show."""


def _assigned_cpus(default: int) -> int:
    """CPUs Ray reserved for the running trial (its torch thread count), or ``default`` outside Ray."""
    try:
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:  # noqa: BLE001 - not inside a Ray worker
        cpus = None
    return max(1, int(cpus)) if cpus else default


def proxy_trainable(config: dict[str, Any]) -> None:
    """The Tune function trainable: one configuration on the full schedule, asking the rung board at each
    rung; any exception becomes a failed result.

    Args:
        config: ``{"entry": trial number or "status_quo", "trainable_params": int, "keep": bool (never stop),
            "request": ProxyRequest.to_dict(), "rung_board": the board actor's name or None}``.
    """
    import ray
    from ray import tune

    from autopeft.training import run_proxy_trial

    request = ProxyRequest.from_dict(config["request"])
    request = dataclasses.replace(request, threads=_assigned_cpus(request.threads))
    at_rung = None
    if config.get("rung_board"):
        board = ray.get_actor(config["rung_board"])
        request = dataclasses.replace(request, rungs=(ray.get(board.first_rung.remote()),))

        def at_rung(record: dict[str, Any]) -> float | None:
            neg_loss = record["metrics"]["neg_loss"]
            decision = ray.get(
                board.decide.remote(
                    config["entry"], record["fraction"], record["score"], neg_loss, config["trainable_params"],
                    config["keep"],
                )
            )  # fmt: skip
            record["level"] = decision.level
            state = {"first_rung": decision.first_rung, "settled": decision.settled}
            # Tune requires the searcher's metric in every result; the record travels as JSON (no flattening).
            tune.report({"metric": float(record["score"]), RUNG_KEY: json.dumps({**record, **state}),
                         EVENT_KEY: decision.event or ""})  # fmt: skip
            return decision.next_fraction

    try:
        result = run_proxy_trial(request, at_rung)
    except Exception as exc:  # noqa: BLE001 - recorded as the trial's failure reason
        result = {"failed": True, "fail_reason": f"{type(exc).__name__}: {exc}"[:2000], "metric": float("nan")}
    result["worker_rss_mb"] = resident_mb()  # a reused worker's memory, trial after trial
    result["worker_pid"] = os.getpid()  # which worker process ran it (they are reused: trials, then confirmations)
    if "method_report" in result:  # travels as JSON: Tune would flatten it
        result["method_report"] = json.dumps(result["method_report"])
    tune.report(result)


def resident_mb() -> float:
    """This process's resident memory now, in MiB (not its peak: a reused worker's peak only grows)."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


@dataclass
class StatusQuoRun:
    """The status quo's run in flight (a trial of the companion study).

    Attributes:
        trial: its trial in the companion study.
        rungs: its rung records so far.
    """

    trial: optuna.Trial
    rungs: list[dict[str, Any]] = dataclasses.field(default_factory=list)


class StudySearcher(Searcher):
    """A Tune searcher that asks and tells an Optuna study, the status quo first.

    Args:
        bound: the study, its space and budget.
        make_request: builds the worker's request from a trial number and configuration.
        target: trials the study should hold (trained to the end or stopped at a rung) when the search ends.
        max_failures: failures (in this run) after which no new trial is started.
        on_trial_end: called with each trial as it is told to the study.
        on_event: called with each line worth showing (the first rung raised or settled, the status quo's end).
        on_status_quo_end: called when the status quo's run is stored (finished or failed).
        on_timing: called after each trial with what the search's own work cost around it: ``ask_s`` (its
            proposal), ``bookkeeping_s`` (storing it, its MLflow run, the Pareto tags and plot, the display),
            ``driver_rss_mb`` and ``worker_rss_mb`` (resident memory of this process and of the worker), and
            ``worker_pid``; after the status quo's run (``status_quo: True``) and each confirmation run
            (``confirmation``: the trial's number or ``STATUS_QUO_KEY``) with the worker's.
        confirmations: the confirmation runs to hand out once the study holds its trials (``None``: none).
    """

    def __init__(
        self,
        bound: BoundStudy,
        make_request: Callable[[int, TrialConfig], ProxyRequest],
        target: int,
        max_failures: int,
        on_trial_end: Callable[[optuna.trial.FrozenTrial], None],
        on_event: Callable[[str], None] | None = None,
        on_status_quo_end: Callable[[], None] | None = None,
        on_timing: Callable[[dict[str, Any]], None] | None = None,
        confirmations: Confirmations | None = None,
    ) -> None:
        super().__init__(metric="metric", mode="max")
        self.bound = bound
        self.make_request = make_request
        self.target = target
        self.max_failures = max_failures
        self.on_trial_end = on_trial_end
        self.on_event = on_event or (lambda line: None)
        self.on_status_quo_end = on_status_quo_end or (lambda: None)
        self.on_timing = on_timing or (lambda timing: None)
        self.confirmations = confirmations
        self._round: list[ConfirmationRun] = []  # the confirmation round's runs not yet handed out
        self._confirming: dict[str, ConfirmationRun] = {}  # handed out, by Tune's trial id
        self.failures = 0
        self.completed = 0
        self.fallbacks = 0
        self._running: dict[str, trials.StartedTrial | StatusQuoRun] = {}
        self._rungs: dict[str, list[dict[str, Any]]] = {}
        self.rung_board: str | None = None
        self._board = None  # the actor's handle: the actor lives as long as it is held
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, daemon=True)
        self._heartbeat.start()

    # -- heartbeats ------------------------------------------------------------------------------
    def _beat(self) -> None:
        storage = self.bound.storage
        while not self._stop.wait(self.bound.spec.how.heartbeat_grace / HEARTBEATS_PER_GRACE):
            with self._lock:
                ids = [job.trial._trial_id for job in self._running.values()]
            for trial_id in ids:
                try:
                    storage.record_heartbeat(trial_id)
                except Exception:  # noqa: BLE001 - the next beat tries again
                    pass

    def close(self) -> None:
        """Stop the heartbeat thread."""
        self._stop.set()

    # -- the rung board --------------------------------------------------------------------------
    def start_rung_board(self, prior: float | None) -> None:
        """Start the Ray actor that takes the rung decisions, fed with what the study already stores.

        Args:
            prior: the label prior's ``neg_loss`` on the selection split (the first rung's learnt check).
        """
        import ray

        history: dict[int, dict[object, tuple[float, int, float]]] = {}
        entries = [(t.number, t) for t in self.bound.study.get_trials(deepcopy=False, states=DONE_STATES)]
        entries += [(STATUS_QUO, t) for t in self.bound.status_quo_study.get_trials(deepcopy=False, states=DONE_STATES)]
        for key, trial in entries:
            for record in trial.user_attrs.get(keys.RUNGS, []):
                if record.get("level") is not None:
                    history.setdefault(record["level"], {})[key] = (
                        record["score"],
                        trial.user_attrs[keys.TRAINABLE_PARAMS],
                        record["metrics"]["neg_loss"],
                    )
        stored = self.bound.study.user_attrs.get(keys.FIRST_RUNG) or {}
        settled = stored.get("fraction") if stored.get("settled") else None
        self.rung_board = f"autopeft-rungs-{self.bound.study.study_name}-{os.getpid()}-{time.time_ns()}"
        actor = ray.remote(num_cpus=0)(RungBoard).options(name=self.rung_board)
        self._board = actor.remote(self.bound.spec.what.rungs, prior, settled, history)

    # -- Tune interface --------------------------------------------------------------------------
    def _counts(self) -> tuple[int, int]:
        """Done (trained to the end or stopped at a rung) and running trials in the storage, every worker's."""
        states = [
            t.state for t in self.bound.study.get_trials(deepcopy=False, states=(*DONE_STATES, TrialState.RUNNING))
        ]
        return len(states) - states.count(TrialState.RUNNING), states.count(TrialState.RUNNING)

    def _surplus(self, number: int) -> bool:
        """Whether trial ``number`` is one too many: workers that asked at the same moment keep the lower numbers."""
        asked = self.bound.study.get_trials(deepcopy=False, states=(*DONE_STATES, TrialState.RUNNING))
        ahead = sum(t.state != TrialState.RUNNING or t.number < number for t in asked if t.number != number)
        return ahead >= self.target

    def status_quo_owed(self) -> bool:
        """Whether the status quo still has to run: no run of it finished, none is in flight (another worker's),
        and none failed on its own (an interrupted one did not: it runs again)."""
        if self.bound.status_quo.config is None or any(isinstance(j, StatusQuoRun) for j in self._running.values()):
            return False
        runs = self.bound.status_quo_study.get_trials(deepcopy=False)
        return not any(
            t.state in (*DONE_STATES, TrialState.RUNNING)
            or (t.state == TrialState.FAIL and keys.FAIL_REASON in t.user_attrs)
            for t in runs
        )

    def suggest(self, trial_id: str) -> dict | None:
        if self.status_quo_owed():
            job = self._start_status_quo()
            if job is not None:
                with self._lock:
                    self._running[trial_id] = job
                return self._job_config(
                    STATUS_QUO, self.bound.status_quo.trainable_params, job, self.bound.status_quo.config, True
                )
        done, running = self._counts()
        if done >= self.target or self.failures >= self.max_failures:
            return self._confirmation(trial_id) if not self._running else None
        # Enough trials in flight. When none of them is ours, they belong to another worker or to
        # a killed run: wait here (Tune need not poll again) until their heartbeats prove them dead.
        deadline = time.monotonic() + 1.5 * self.bound.spec.how.heartbeat_grace
        while done + running >= self.target and done < self.target and not self._running:
            if time.monotonic() > deadline:
                return None
            fail_stale_trials(self.bound.study)
            time.sleep(1.0)
            done, running = self._counts()
        if done >= self.target:
            return Searcher.FINISHED
        if done + running >= self.target:
            return None  # our own trials are in flight; Tune asks again when one ends
        trial = trials.ask(self.bound)
        self.bound.storage.record_heartbeat(trial._trial_id)  # Optuna gives a trial's id no public name
        if trials.fallback_reason(trial) is not None:
            self.fallbacks += 1
        if self._surplus(trial.number):
            trials.withdraw(self.bound, trial, "withdrawn before training: other workers already fill the study")
            return None
        started = trials.start(self.bound, trial)
        if started is None:
            return None
        with self._lock:
            self._running[trial_id] = started
        return self._job_config(started.number, started.count, started, started.config, False)

    def _confirmation(self, trial_id: str) -> dict | str | None:
        """The next confirmation run once the trials are done (``None``: the round's runs are in flight; Tune asks
        again when one ends), or ``Searcher.FINISHED``."""
        if self.confirmations is None:
            return Searcher.FINISHED
        if not self._round and not self._confirming:
            self._round = self.confirmations.next_round()
            if not self._round:
                return Searcher.FINISHED
        if not self._round:
            return None
        run = self._round.pop(0)
        with self._lock:
            self._confirming[trial_id] = run
        return {"entry": "confirmation", "trainable_params": 0, "keep": True, "request": run.request.to_dict(),
                "rung_board": None}  # fmt: skip

    def _job_config(self, entry: object, count: int, job, config: TrialConfig, keep: bool) -> dict[str, Any]:
        number = job.number if isinstance(job, trials.StartedTrial) else -1
        request = self.make_request(number, config)
        if entry == STATUS_QUO:
            request = dataclasses.replace(request, seed=self.bound.spec.how.seed, masks_path=None)
        return {"entry": entry, "trainable_params": count, "keep": keep, "request": request.to_dict(),
                "rung_board": self.rung_board}  # fmt: skip

    def _start_status_quo(self) -> StatusQuoRun | None:
        """Ask the companion study for the status quo's run (``None`` when another worker asked first)."""
        study, status_quo = self.bound.status_quo_study, self.bound.status_quo
        trial = study.ask()
        self.bound.storage.record_heartbeat(trial._trial_id)
        others = study.get_trials(deepcopy=False, states=(*DONE_STATES, TrialState.RUNNING))
        if any(t.number < trial.number for t in others):
            trial.set_user_attr(keys.WITHDRAWN, True)
            study.tell(trial, state=TrialState.FAIL)
            return None
        for key, value in {**status_quo.to_dict(), "seed": self.bound.spec.how.seed}.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr(keys.TRAINABLE_FRACTION, self.bound.info.fraction(status_quo.trainable_params))
        trial.set_user_attr(keys.SCORED_ON, self.bound.spec.what.scored_on)
        if self.bound.memory is not None and status_quo.config is not None:
            trial.set_user_attr(keys.PREDICTED_MEMORY, self.bound.exact_values(status_quo.config)["memory"])
        return StatusQuoRun(trial)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        record = result.get(RUNG_KEY)
        if not record:
            return
        record = json.loads(record)
        state = {"fraction": record.pop("first_rung"), "settled": record.pop("settled")}
        with self._lock:
            job = self._running.get(trial_id)
        if job is None:
            return
        rungs = self._rungs.setdefault(trial_id, [])
        rungs.append(record)
        trials.record_rungs(job.trial, rungs)
        event = result.get(EVENT_KEY)
        if event:
            stored = self.bound.study.user_attrs.get(keys.FIRST_RUNG) or {"events": []}
            self.bound.study.set_user_attr(keys.FIRST_RUNG, {**state, "events": [*stored["events"], event]})
            self.on_event(event)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        with self._lock:
            job = self._running.pop(trial_id, None)
            confirmation = self._confirming.pop(trial_id, None)
        worker = {"worker_rss_mb": (result or {}).get("worker_rss_mb"), "worker_pid": (result or {}).get("worker_pid")}
        if confirmation is not None:
            self.confirmations.record(confirmation, None if error else result)
            self.on_timing({"confirmation": confirmation.key, "seed": confirmation.seed, **worker})
            return
        self._rungs.pop(trial_id, None)
        if job is None:
            return
        if isinstance(job, StatusQuoRun):
            self.on_event(finish_status_quo(self.bound, job, None if error else result))
            self.on_status_quo_end()
            self.on_timing({"status_quo": True, **worker})
            return
        started = time.perf_counter()
        stored = trials.finish(self.bound, job, None if error else result)
        if stored.state == TrialState.FAIL:
            self.failures += 1
        else:
            self.completed += 1
        self.on_trial_end(stored)
        timing = {"trial": stored.number, "ask_s": stored.user_attrs.get(keys.ASK_SECONDS), "done": self.completed}
        timing |= {"bookkeeping_s": round(time.perf_counter() - started, 4), "driver_rss_mb": resident_mb()}
        self.on_timing({**timing, **worker})

    def __getstate__(self) -> dict:
        # Tune pickles its configuration for restoring an experiment; this searcher's state lives
        # in the Optuna storage, so only the study's name is kept.
        return {"study_name": self.bound.study.study_name}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        """The state lives in the Optuna storage; only a pointer to it is written."""
        Path(checkpoint_path).write_text(f"{self.bound.study.study_name}\n")

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: the Optuna storage holds the state."""


def finish_status_quo(bound: BoundStudy, job: StatusQuoRun, result: dict | None) -> str:
    """Store the status quo's run as its companion trial's outcome; return the line that says how it went.

    Args:
        bound: the study.
        job: the run.
        result: its training's result (``None`` or failed when the training failed).
    """
    study, trial = bound.status_quo_study, job.trial
    label = bound.status_quo.label
    if result is None or result.get("failed"):
        reason = (result or {}).get("fail_reason") or "the worker process running it died"
        trial.set_user_attr(keys.FAIL_REASON, reason)
        study.tell(trial, state=TrialState.FAIL)
        return f"status quo ({label}) failed: {reason}"
    result = trials.gathered(result)
    metrics = result["metrics"]
    values = bound.objective_values(bound.status_quo.config, result)
    trial.set_user_attr(keys.METRICS, metrics)
    trial.set_user_attr(keys.METRIC, result["metric"])
    for key in keys.RESULT:
        if key in result:
            trial.set_user_attr(key, result[key])
    study.tell(trial, values)
    return f"status quo ({label}) trained to the end: {bound.task.metric} {result['metric']:.4f}"


def route_ray_logs(path: Path) -> None:
    """Send Ray's own log lines (Tune's reports of a dead worker with their tracebacks, Ray's warnings) to a file,
    not to the console, where the search shows one line per event. Called again once Tune is imported, as
    Ray's loggers gain handlers as their modules load.

    Args:
        path: the log file (its folder is created).
    """
    import logging

    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger("ray")
    if not any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path.resolve() for h in root.handlers):
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False
    for name in [n for n in logging.root.manager.loggerDict if n == "ray" or n.startswith("ray.")]:
        logger = logging.getLogger(name)
        to_console = [h for h in logger.handlers if isinstance(h, logging.StreamHandler)]
        for handler in [h for h in to_console if not isinstance(h, logging.FileHandler)]:  # Ray's own handlers too
            logger.removeHandler(handler)
        if name != "ray":
            logger.propagate = True  # up to the file


def init_ray(address: str | None, num_cpus: int, num_gpus: float | None, log_file: Path | None = None) -> None:
    """Connect to a Ray cluster, or start a private local one (token auth off, no dashboard).

    Args:
        address: ``auto``, ``ray://host:port``, ``host:port`` or ``None`` for a local cluster.
        num_cpus: CPUs of a local cluster.
        num_gpus: GPUs of a local cluster (``None``: detect).
        log_file: where Ray's own log lines go (``None``: where Ray sends them).
    """
    import ray

    if ray.is_initialized():
        return
    try:
        _init_ray(address, num_cpus, num_gpus)
    finally:
        if log_file is not None:
            route_ray_logs(log_file)


def _init_ray(address: str | None, num_cpus: int, num_gpus: float | None) -> None:
    import ray

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no Tune tables on the console
    if address:
        try:
            ray.init(address=address, log_to_driver=False)
        except Exception as exc:  # noqa: BLE001
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            from autopeft.errors import AutopeftError

            raise AutopeftError(f"--ray-address {mask_url(address)}: cannot connect: {first}") from None
        return
    # A private cluster for this search. Ray 2.60's gRPC servers listen on every interface whatever
    # the node address, so the cluster takes a token of its own (random, in this process's
    # environment, which its workers inherit; never written to disk or printed): nobody else's
    # process can join it. RAY_AUTH_MODE set by the caller wins.
    if "RAY_AUTH_MODE" not in os.environ:
        import secrets

        from ray._raylet import AuthenticationTokenLoader, Config

        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
        # Ray reads the mode and the token once per process, when first imported; no public call
        # makes it read them again, so the two calls Ray itself makes when it turns tokens on.
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    ray.init(
        address="local",  # a new cluster even where another one runs (Ray would join the newest it finds)
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=True,
        logging_level="ERROR",
    )


def run_with_ray(
    searcher: StudySearcher,
    run_dir: Path,
    name: str,
    workers: int,
    cpus_per_trial: float,
    gpus_per_trial: float,
    prior: float | None = None,
) -> None:
    """Run the searcher's trials (and the status quo) on Ray Tune until it reports the study finished.

    Args:
        searcher: the study searcher.
        run_dir: Tune's storage folder.
        name: the Tune experiment's name.
        workers: trials at the same time.
        cpus_per_trial: CPUs reserved per trial.
        gpus_per_trial: GPUs per trial (fractions pack several trials on one GPU).
        prior: the label prior's ``neg_loss`` (the first rung's learnt check; ``None``: not checked).
    """
    import logging

    from ray import tune

    logs = [h.baseFilename for h in logging.getLogger("ray").handlers if isinstance(h, logging.FileHandler)]
    if logs:
        route_ray_logs(Path(logs[0]))  # Tune's loggers, imported just now
    searcher.start_rung_board(prior)
    resources = {"cpu": cpus_per_trial, "gpu": gpus_per_trial}
    tuner = tune.Tuner(
        tune.with_resources(proxy_trainable, resources),
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=-1, max_concurrent_trials=workers, reuse_actors=True
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(run_dir.resolve()),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    tuner.fit()
