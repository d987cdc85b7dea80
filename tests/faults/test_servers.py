"""A server that goes away mid-search: the study's PostgreSQL store (stopped, then started again), the MLflow
tracking server (stopped: the search warns once and goes on; ``autopeft sync`` fills the runs in later)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import optuna
import pytest
from faults.harness import STUDY, TARGET, Process, query, run, search_args
from faults.tally import TALLY
from helpers import free_port, mlflow_runs

pytestmark = pytest.mark.slow
DONE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def test_the_study_store_stopped_and_started_again_loses_nothing(tmp_path, tiny_model, data_dir, postgres_server):
    runs = tmp_path / "runs"
    args = [*search_args(tiny_model, data_dir, runs, samples=1024, trials_=4), "--storage", postgres_server.url]
    search = Process(args, tmp_path / "search.err")

    def one_done() -> bool:
        try:
            study = optuna.load_study(study_name=STUDY, storage=postgres_server.url)
        except Exception:  # noqa: BLE001 - not created yet
            return False
        return len(study.get_trials(states=DONE)) >= 1

    hit = search.wait_for(one_done)
    postgres_server.stop()
    time.sleep(5)
    postgres_server.start()
    code, first = search.finish()
    outputs = [first]
    if code != 0:  # it may stop with one line: then the same command continues
        assert len(first.strip().splitlines()[-1]) < 400 and "Traceback" not in first, first[-3000:]
        code, again = run(args, tmp_path / "again.err")
        outputs.append(again)
    study = optuna.load_study(study_name=STUDY, storage=postgres_server.url)
    done = study.get_trials(states=DONE)
    keys = [str(sorted(t.params.items())) for t in done]
    clean = hit and code == 0 and len(done) == 4 and len(keys) == len(set(keys))
    TALLY["faults"] += 1
    TALLY["resumed_clean"] += int(clean)
    TALLY["duplicated"] += len(keys) - len(set(keys))
    TALLY["internal_errors"] += sum("internal error" in out or "Traceback" in out for out in outputs)
    assert hit and code == 0, outputs[-1][-3000:]
    assert not any("internal error" in out for out in outputs), outputs
    assert len(done) == 4 and len(keys) == len(set(keys))


def mlflow_server(store, port: int) -> subprocess.Popen:
    """The real ``mlflow server`` (one worker, no job execution) on loopback, answering /health."""
    command = [os.path.join(os.path.dirname(sys.executable), "mlflow"), "server", "--backend-store-uri",
               f"sqlite:///{store}", "--artifacts-destination", str(store.parent / "artifacts"), "--host",
               "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                              start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return server
        except OSError:
            assert server.poll() is None, "mlflow server exited"
            time.sleep(0.5)
    raise AssertionError("mlflow server did not answer in 120 s")


def stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, 9)
    server.wait(timeout=30)


def test_the_tracking_server_gone_mid_search_warns_once_and_sync_fills_the_runs_in(tmp_path, tiny_model, data_dir):
    runs, port = tmp_path / "runs", free_port()
    uri = f"http://127.0.0.1:{port}"
    server = mlflow_server(tmp_path / "mlflow.db", port)
    args = [*search_args(tiny_model, data_dir, runs, samples=1024), "--tracking-uri", uri]
    search = Process(args, tmp_path / "search.err")
    try:
        hit = search.wait_for(lambda: bool(query(tmp_path / "mlflow.db", "SELECT 1 FROM tags WHERE key = "
                                                 "'autopeft.role' AND value = 'trial'")))  # fmt: skip
    finally:
        stop(server)
    code, err = search.finish()
    warnings = [line for line in err.splitlines() if "MLflow tracking" in line]
    server = mlflow_server(tmp_path / "mlflow.db", port)
    try:
        synced = subprocess.run([sys.executable, "-m", "autopeft.cli", "sync", "--study", STUDY, "--runs-dir",
                                 str(runs), "--tracking-uri", uri], capture_output=True, text=True, timeout=300)  # fmt: skip
        trial_runs, parents = mlflow_runs(uri, STUDY)
    finally:
        stop(server)
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{runs}/optuna.db")
    logged = sorted(int(r.data.tags["autopeft.trial"]) for r in trial_runs)
    clean = hit and code == 0 and len(warnings) == 1 and synced.returncode == 0 and len(parents) == 1
    clean = clean and logged == sorted(t.number for t in study.get_trials())
    TALLY["faults"] += 1
    TALLY["resumed_clean"] += int(clean)
    TALLY["internal_errors"] += ("internal error" in err) + ("Traceback" in err)
    assert hit and code == 0, err[-3000:]
    assert len(warnings) == 1 and "is off for this run" in warnings[0], warnings
    assert synced.returncode == 0, synced.stderr
    assert len(parents) == 1 and logged == sorted(t.number for t in study.get_trials()), logged
    assert len(study.get_trials(states=DONE)) == TARGET
