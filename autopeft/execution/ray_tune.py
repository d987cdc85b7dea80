"""Run trials with Ray Tune, proposals coming from the Optuna study (its storage is the truth).

:class:`StudySearcher` is a Tune ``Searcher`` that asks the Optuna study for each new trial and
tells it the result, so every finished trial is in the RDB storage the moment it ends, and a
re-run of the same command continues where the last one stopped. Heartbeats mark the trials in
flight, so trials of a killed search are recognised as stale and failed later.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from autopeft.execution import trials
from autopeft.execution.early_stopping import RungBoard
from autopeft.methods.config import TrialConfig
from autopeft.study import HEARTBEAT_SECONDS, BoundStudy, EarlyStopping, fail_stale_trials, mask_url
from autopeft.training import ProxyRequest

DONE_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
"""Trials that count towards a study's target: finished, or stopped early."""


def _assigned_cpus(default: int) -> int:
    """CPUs Ray reserved for the running trial (its torch thread count), or ``default`` outside Ray."""
    try:
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:  # noqa: BLE001 - not inside a Ray worker
        cpus = None
    return max(1, int(cpus)) if cpus else default


def proxy_trainable(config: dict[str, Any]) -> None:
    """The Tune function trainable: one proxy training; any exception becomes a failed result.

    Args:
        config: ``{"trial_number": int, "trainable_params": int, "request": ProxyRequest.to_dict(),
            "rung_board": name of the early-stopping actor or None}``.
    """
    import dataclasses

    import ray
    from ray import tune

    from autopeft.training import run_proxy_trial

    request = ProxyRequest.from_dict(config["request"])
    request = dataclasses.replace(request, threads=_assigned_cpus(request.threads))
    at_rung = None
    if config.get("rung_board"):
        board = ray.get_actor(config["rung_board"])
        number, params = config["trial_number"], config["trainable_params"]

        def at_rung(rung: int, fraction: float, score: float) -> bool:
            return ray.get(board.decide.remote(number, rung, score, params))

    try:
        result = run_proxy_trial(request, at_rung)
    except Exception as exc:  # noqa: BLE001 - recorded as the trial's failure reason
        # Tune requires the searcher's metric in every result: NaN marks "none".
        result = {"failed": True, "fail_reason": f"{type(exc).__name__}: {exc}"[:2000], "metric": float("nan")}
    tune.report(result)


class StudySearcher(Searcher):
    """A Tune searcher that asks and tells an Optuna study.

    Args:
        bound: the study, its space and budget.
        make_request: builds the worker's request from a trial number and configuration.
        target: finished trials the study should hold when the search ends.
        max_failures: failures (in this run) after which no new trial is started.
        on_trial_end: called with each trial as it is told to the study.
    """

    def __init__(
        self,
        bound: BoundStudy,
        make_request: Callable[[int, TrialConfig], ProxyRequest],
        target: int,
        max_failures: int,
        on_trial_end: Callable[[optuna.trial.FrozenTrial], None],
    ) -> None:
        super().__init__(metric="metric", mode="max")
        self.bound = bound
        self.make_request = make_request
        self.target = target
        self.max_failures = max_failures
        self.on_trial_end = on_trial_end
        self.failures = 0
        self.completed = 0
        self.fallbacks = 0
        self._running: dict[str, trials.StartedTrial] = {}
        self.rung_board: str | None = None
        self._board = None  # the actor's handle: the actor lives as long as it is held
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, daemon=True)
        self._heartbeat.start()

    # -- heartbeats ------------------------------------------------------------------------------
    def _beat(self) -> None:
        storage = self.bound.storage
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with self._lock:
                ids = [t.trial._trial_id for t in self._running.values()]
            for trial_id in ids:
                try:
                    storage.record_heartbeat(trial_id)
                except Exception:  # noqa: BLE001 - the next beat tries again
                    pass

    def close(self) -> None:
        """Stop the heartbeat thread."""
        self._stop.set()

    # -- Tune interface --------------------------------------------------------------------------
    def start_early_stopping(self, policy: EarlyStopping) -> None:
        """Start the Ray actor that takes the stop decisions, fed with the rung scores already stored.

        Args:
            policy: the early-stopping policy.
        """
        import ray

        history: dict[int, dict[int, tuple[float, int]]] = {}
        for trial in self.bound.study.get_trials(deepcopy=False, states=DONE_STATES):
            for rung, score in enumerate(trial.user_attrs.get("rung_scores", [])):
                history.setdefault(rung, {})[trial.number] = (score, trial.user_attrs["trainable_params"])
        self.rung_board = f"autopeft-rungs-{self.bound.study.study_name}-{os.getpid()}-{time.time_ns()}"
        actor = ray.remote(num_cpus=0)(RungBoard).options(name=self.rung_board)
        self._board = actor.remote(policy, history)

    def _counts(self) -> tuple[int, int]:
        """Done (finished or stopped early) and running trials in the storage, every worker's."""
        states = [
            t.state for t in self.bound.study.get_trials(deepcopy=False, states=(*DONE_STATES, TrialState.RUNNING))
        ]
        return len(states) - states.count(TrialState.RUNNING), states.count(TrialState.RUNNING)

    def _surplus(self, number: int) -> bool:
        """Whether trial ``number`` is one too many: workers that asked at the same moment keep the lower numbers."""
        asked = self.bound.study.get_trials(deepcopy=False, states=(*DONE_STATES, TrialState.RUNNING))
        ahead = sum(t.state != TrialState.RUNNING or t.number < number for t in asked if t.number != number)
        return ahead >= self.target

    def suggest(self, trial_id: str) -> dict | None:
        done, running = self._counts()
        if done >= self.target or self.failures >= self.max_failures:
            return Searcher.FINISHED if not self._running else None
        # Enough trials in flight. When none of them is ours, they belong to another worker or to
        # a killed run: wait here (Tune need not poll again) until their heartbeats prove them dead.
        deadline = time.monotonic() + 4 * HEARTBEAT_SECONDS
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
        return {
            "trial_number": started.number,
            "trainable_params": started.count,
            "request": self.make_request(started.number, started.config).to_dict(),
            "rung_board": self.rung_board,
        }

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        with self._lock:
            started = self._running.pop(trial_id, None)
        if started is None:
            return
        stored = trials.finish(self.bound, started, None if error else result)
        if stored.state == TrialState.FAIL:
            self.failures += 1
        else:
            self.completed += 1
        self.on_trial_end(stored)

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


def init_ray(address: str | None, num_cpus: int, num_gpus: float | None) -> None:
    """Connect to a Ray cluster, or start a private local one (token auth off, no dashboard).

    Args:
        address: ``auto``, ``ray://host:port``, ``host:port`` or ``None`` for a local cluster.
        num_cpus: CPUs of a local cluster.
        num_gpus: GPUs of a local cluster (``None``: detect).
    """
    import ray

    if ray.is_initialized():
        return
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
    early_stopping: EarlyStopping | None = None,
) -> None:
    """Run the searcher's trials on Ray Tune until it reports the study finished.

    Args:
        searcher: the study searcher.
        run_dir: Tune's storage folder.
        name: the Tune experiment's name.
        workers: trials at the same time.
        cpus_per_trial: CPUs reserved per trial.
        gpus_per_trial: GPUs per trial (fractions pack several trials on one GPU).
        early_stopping: stop dominated trials at rungs (``None``: every trial trains to the end).
    """
    from ray import tune

    if early_stopping is not None:
        searcher.start_early_stopping(early_stopping)
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
