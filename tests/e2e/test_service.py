"""autopeft as a service on a real local Ray head with its job server (token authentication on), a real
PostgreSQL study store and a real MLflow server, all on 127.0.0.1 and stopped afterwards."""

from __future__ import annotations

import functools
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request

import optuna
import pytest
from conftest import _free_port, ray_head
from helpers import autopeft

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def job_server(tmp_path_factory):
    """A Ray head with its dashboard's job server on loopback, token authentication on; yields (address, env)."""
    token = secrets.token_hex(16)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    port, dashboard = _free_port(), _free_port()
    options = (
        f"--port={port}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}",
    )
    with ray_head(*options, env=env):
        yield f"http://127.0.0.1:{dashboard}", env


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on loopback with a SQLite store (one worker, no job execution)."""
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
    server = subprocess.Popen(
        [
            mlflow, "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--artifacts-destination",
            str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            raise RuntimeError("mlflow server did not start")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.fixture(scope="module")
def service(job_server, mlflow_server, postgres_url, tiny_model, data_dir):
    address, env = job_server

    def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
        return autopeft(*args, env={**env, **kwargs.pop("env", {})}, **kwargs)

    run.env = env

    def search_args(study: str, trials: int, *extra: str) -> list[str]:
        return [
            "--address", address, "--storage", postgres_url, "--tracking-uri", mlflow_server, "--task", "rte",
            "--budget", "2%", "--model", tiny_model, "--epochs", "0.5", "--max-train-samples", "64",
            "--max-eval-samples", "64", "--data-dir", data_dir, "--study", study, "--workers", "2", "--confirm", "1",
            *extra, "--trials", str(trials),
        ]  # fmt: skip

    return run, search_args, address, postgres_url


def jobs(run, address, storage) -> list[dict]:
    listed = run("jobs", "--address", address, "--storage", storage, "--json")
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)


def wait_for(run, address, storage, job, states=("SUCCEEDED", "FAILED", "STOPPED"), timeout=600) -> dict:
    """Wait for a job to reach one of ``states``, then return its row as ``autopeft jobs`` prints it.

    The wait polls the job server from this process, with the cluster's token as a bearer header: an
    ``autopeft jobs`` process per poll would take most of a core from the search it waits for.
    """
    client = job_client(run, address)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if str(client.get_job_status(job).value) in states:
            return next(r for r in jobs(run, address, storage) if r["job"] == job)
        time.sleep(1)
    raise AssertionError(f"job {job} did not reach {states}")


def job_client(run, address: str):
    """A client of the job server, with the cluster's token as a bearer header."""
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address, headers={"Authorization": f"Bearer {run.env['RAY_AUTH_TOKEN']}"})


def submitted_job(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split()[2]  # "submitted job <id> running study <name>"


@functools.cache
def _store(url: str) -> optuna.storages.RDBStorage:
    """One storage per URL for this test process: polling through a new one each time left an engine per poll
    until a full garbage collection, and the server ran out of connections ("too many clients")."""
    return optuna.storages.RDBStorage(url)


def complete_trials(storage: str, study: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials that count towards its target: trained to the end, or stopped at a rung."""
    loaded = optuna.load_study(study_name=study, storage=_store(storage))
    return loaded.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))


def test_a_bad_submission_is_refused_before_anything_is_sent(service, tmp_path):
    run, search_args, address, storage = service
    before = len(jobs(run, address, storage))
    local = run("submit", *search_args("bad", 4), "--storage", f"sqlite:///{tmp_path}/optuna.db")
    assert local.returncode == 2 and "SQLite file lives on this machine only" in local.stderr
    assert len(local.stderr.strip().splitlines()) == 1
    budget = run("submit", *search_args("bad", 4), "--budget", "200%")
    assert budget.returncode == 2 and "budget" in budget.stderr and len(budget.stderr.strip().splitlines()) == 1
    task = tmp_path / "escape" / "task.yaml"
    task.parent.mkdir()
    (tmp_path / "secret.tsv").write_text("a\tb\n")
    task.write_text(
        "name: escape\ntrain: ../secret.tsv\nvalidation: ../secret.tsv\ntext_fields: [a]\nlabel_field: b\n"
        "labels: [x, y]\nmetric: accuracy\n"
    )
    escape = run("submit", *search_args("bad", 4), "--task", str(task))
    assert escape.returncode == 2 and "lies outside the task file's folder" in escape.stderr, escape.stderr
    assert len(jobs(run, address, storage)) == before  # nothing reached the cluster


def test_without_the_cluster_token_the_job_server_says_so_in_one_line(service):
    run, _, address, storage = service
    refused = run("jobs", "--address", address, env={"RAY_AUTH_TOKEN": "not-the-token"})
    assert refused.returncode == 2 and "cannot reach the Ray job server" in refused.stderr
    assert "not-the-token" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


def test_a_submitted_search_completes_and_jobs_and_status_agree_with_the_storage(service):
    run, search_args, address, storage = service
    job = submitted_job(run("submit", *search_args("svc", 4)))
    row = wait_for(run, address, storage, job)
    assert row["state"] == "SUCCEEDED", run("logs", job, "--address", address).stdout[-3000:]
    loaded = optuna.load_study(study_name="svc", storage=storage)
    from autopeft.study import StudyView

    pareto_trials = StudyView(loaded).pareto_trials

    assert row["finished"] == len(complete_trials(storage, "svc")) == 4 == row["target"]
    assert row["pareto_size"] == len(pareto_trials)
    status = run("status", "--study", "svc", "--storage", storage, "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert (shown["finished"], shown["running"], shown["seconds_left"]) == (4, 0, 0.0)
    assert [p["trial"] for p in shown["pareto"]] == [t.number for t in pareto_trials]
    logs = run("logs", job, "--address", address)
    assert logs.returncode == 0 and "trials trained to the end" in logs.stdout
    assert "hunter2" not in logs.stdout  # the storage password is never printed


def test_stop_keeps_the_finished_trials_and_a_resubmit_completes_without_duplicates(service, tmp_path):
    run, search_args, address, storage = service
    longer = ["--epochs", "2"]  # trials long enough that the stop lands while the search runs, on a busy machine
    job = submitted_job(run("submit", *search_args("svc-stop", 8, *longer)))
    client = job_client(run, address)
    deadline = time.monotonic() + 600
    while True:
        try:
            if len(complete_trials(storage, "svc-stop")) >= 1:
                break
        except KeyError:  # the study is not created yet
            pass
        state = str(client.get_job_status(job).value)
        # say why no trial came, not only that none did
        if state not in ("PENDING", "RUNNING") or time.monotonic() > deadline:
            logs = run("logs", job, "--address", address)
            raise AssertionError(f"no trial finished; job {state}: {(logs.stdout + logs.stderr)[-3000:]}")
        time.sleep(0.5)
    stopped = run("stop", job, "--address", address)
    assert stopped.returncode == 0 and "STOPPED" in stopped.stdout, stopped.stdout + stopped.stderr
    kept = {t.number: t.values for t in complete_trials(storage, "svc-stop")}
    assert 1 <= len(kept) < 8
    again = submitted_job(run("submit", *search_args("svc-stop", 8, *longer)))
    assert wait_for(run, address, storage, again)["state"] == "SUCCEEDED"
    after = complete_trials(storage, "svc-stop")
    assert len(after) == 8 and {t.number: t.values for t in after if t.number in kept} == kept
    configs = [json.dumps(t.params, sort_keys=True) for t in after]
    assert len(set(configs)) == len(configs)  # no configuration trained twice
    out = tmp_path / "best"
    export = run("export", "--study", "svc-stop", "--storage", storage, "--pick", "knee", "--out", str(out))
    assert export.returncode == 0, export.stderr
    assert (out / "adapter_config.json").is_file()
