"""Nothing lost, clear errors: failing trials, kill -9 and resume, tracking outages, shared storage, Ray clusters."""

from __future__ import annotations

import subprocess
import sys
import time

import optuna
import pytest
from helpers import autopeft, mlflow_runs, tiny_search_args, trials_of
from optuna.trial import TrialState

pytestmark = pytest.mark.slow

COMPLETE, PRUNED, FAIL = TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL


def write_space(tmp_path, learning_rate: str) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(
        "name: flaky\nmethods:\n  lora:\n    modules: {choices: [query, value]}\n    rank: {choices: [2, 4]}\n"
        f"training:\n  learning_rate: {learning_rate}\n"
    )
    return str(path)


def test_failing_trials_are_recorded_and_the_study_goes_on(tmp_path, tiny_model, data_dir):
    space = write_space(tmp_path, "{choices: [1.0e34, 2.0e-3]}")  # half the proposals diverge
    args = tiny_search_args(tiny_model, data_dir, tmp_path, "flaky", 5, "--space", space, "--sampler", "random",
                            "--workers", "1", "--max-failures", "50")  # fmt: skip
    result = autopeft(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    storage = f"sqlite:///{tmp_path}/optuna.db"
    assert len(trials_of("flaky", storage, COMPLETE, PRUNED)) == 5
    failed = trials_of("flaky", storage, FAIL)
    assert failed, "with half the learning rates diverging, some trial must fail"
    assert all("non-finite loss" in t.user_attrs["fail_reason"] for t in failed)
    runs, _ = mlflow_runs(f"sqlite:///{tmp_path}/mlflow.db", "flaky")
    failed_runs = [r for r in runs if r.info.status == "FAILED"]
    assert len(failed_runs) == len(failed)
    assert all("non-finite loss" in r.data.tags["autopeft.fail_reason"] for r in failed_runs)


@pytest.fixture()
def broken_model(tmp_path, tiny_model):
    """The tiny model with a NaN in its embeddings' LayerNorm: every forward pass gives NaN."""
    import shutil

    import torch
    from transformers import BertForSequenceClassification

    folder = tmp_path / "broken"
    shutil.copytree(tiny_model, folder)
    model = BertForSequenceClassification.from_pretrained(folder)
    with torch.no_grad():
        model.bert.embeddings.LayerNorm.weight[0] = float("nan")
    model.save_pretrained(folder)
    return str(folder)


def test_max_failures_aborts_with_a_summary(tmp_path, broken_model, data_dir):
    args = tiny_search_args(broken_model, data_dir, tmp_path, "doomed", 3, "--workers", "1", "--max-failures", "2")
    result = autopeft(*args)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "stopped after 2 failed trials (--max-failures 2); 0 of 3 trials finished" in last
    assert "non-finite loss" in last and "Traceback" not in result.stderr
    assert len(trials_of("doomed", f"sqlite:///{tmp_path}/optuna.db", FAIL)) == 2


def test_tracking_outage_warns_once_and_sync_catches_up(tmp_path, tiny_model, data_dir):
    from conftest import _free_port

    down = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    args = tiny_search_args(tiny_model, data_dir, tmp_path, "offline", 2, "--workers", "2", "--tracking-uri", down)
    result = autopeft(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if "MLflow tracking" in line]
    assert len(warnings) == 1 and "is off for this run" in warnings[0]
    assert len(trials_of("offline", f"sqlite:///{tmp_path}/optuna.db", COMPLETE, PRUNED)) == 2
    later = f"sqlite:///{tmp_path}/recovered.db"
    synced = autopeft("sync", "--study", "offline", "--runs-dir", str(tmp_path), "--tracking-uri", later)
    assert synced.returncode == 0, synced.stderr
    assert "logged 2 missing trial runs" in synced.stdout
    runs, parents = mlflow_runs(later, "offline")
    assert len(runs) == 2 and len(parents) == 1
    assert sum(r.data.tags["autopeft.pareto"] == "true" for r in runs) >= 1
    again = autopeft("sync", "--study", "offline", "--runs-dir", str(tmp_path), "--tracking-uri", later)
    assert "logged 0 missing trial runs" in again.stdout


def test_two_workers_share_one_postgresql_study(tmp_path, tiny_model, data_dir, postgres_url):
    args = tiny_search_args(tiny_model, data_dir, tmp_path, "shared", 4, "--workers", "1", "--storage", postgres_url)
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "autopeft.cli", *args, "--seed", str(seed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )  # fmt: skip
        for seed in (1, 2)
    ]
    outputs = [w.communicate(timeout=900) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-3000:]
        assert "hunter2" not in err
    finished = trials_of("shared", postgres_url, COMPLETE, PRUNED)
    assert len(finished) == 4
    configs = [str(sorted(t.params.items())) for t in trials_of("shared", postgres_url)]
    assert len(configs) == len(set(configs)), "a configuration was evaluated twice"
    _, parents = mlflow_runs(f"sqlite:///{tmp_path}/mlflow.db", "shared")
    assert len(parents) == 1
    assert not [v for v in parents[0].data.params.values() if "hunter2" in v], "a password reached MLflow"
    assert "postgres:***@" in parents[0].data.params["spec.where.storage"]


def test_search_runs_on_an_existing_ray_cluster(tmp_path, tiny_model, data_dir, ray_cluster, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    args = tiny_search_args(
        tiny_model, data_dir, tmp_path, "cluster", 2, "--workers", "2", "--ray-address", ray_cluster
    )
    result = autopeft(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(trials_of("cluster", f"sqlite:///{tmp_path}/optuna.db", COMPLETE, PRUNED)) == 2


def test_a_local_search_starts_its_own_cluster_beside_another_one(tmp_path, tiny_model, data_dir, ray_cluster):
    """Ray joins the newest cluster it finds on the machine unless told otherwise: a second search (or
    anyone's ``ray start``) made a local search fail with "num_cpus ... must not be provided"."""
    result = autopeft(*tiny_search_args(tiny_model, data_dir, tmp_path, "beside", 2, "--workers", "2"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(trials_of("beside", f"sqlite:///{tmp_path}/optuna.db", COMPLETE, PRUNED)) == 2


def test_a_trial_asked_but_never_beaten_goes_stale(tmp_path):
    """A process killed between asking for a trial and its first heartbeat must not leave it RUNNING forever."""
    from autopeft.study import connect_storage, fail_stale_trials

    study = optuna.create_study(
        storage=connect_storage(f"sqlite:///{tmp_path}/o.db", heartbeat_grace=3), study_name="s"
    )
    study.ask()  # no heartbeat recorded: the process "died" here
    fail_stale_trials(study)
    assert study.trials[0].state == TrialState.RUNNING  # not failed at once: a live worker beats right after asking
    time.sleep(3 + 2)
    fail_stale_trials(study)
    assert study.trials[0].state == TrialState.FAIL
