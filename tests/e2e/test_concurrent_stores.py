"""Several autopeft processes starting at the same instant on one fresh runs folder share its stores safely.

Each round, N processes open a fresh folder's SQLite Optuna storage and study, its SQLite MLflow
store with the study's experiment and parent run, and its tokenisation cache, each store at the same
instant (a file barrier before each). Every store must then be usable and hold one study, one experiment and one parent run.
"""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest
from mlflow.tracking import MlflowClient

from autopeft.runs_dir import RunsDir

pytestmark = pytest.mark.slow

PROCESSES = 3
ROUNDS = 5

OPEN_STORES = """
import json, os, sys, time
from pathlib import Path
import mlflow.tracking  # imported before the barriers, so that they line up the stores' creation itself
from autopeft.study import StudySpec, open_study
from autopeft.tasks import get_task
from autopeft.tracking import StudyTracker
from autopeft.training.data import tokenized_split

model, data_dir, root, me, processes, rounds = sys.argv[1], sys.argv[2], Path(sys.argv[3]), *map(int, sys.argv[4:])


def barrier(folder, stage, wait=True):
    # everyone goes on when all are here: each store is then opened by all processes at the same instant
    (folder / f"{stage}-{me}").touch()
    deadline = time.monotonic() + 300
    while wait and len(list(folder.glob(f"{stage}-*"))) < processes and time.monotonic() < deadline:
        time.sleep(0.001)


for round_ in range(rounds):
    runs = root / f"round-{round_}"
    runs.mkdir(exist_ok=True)
    spec = StudySpec.from_dict(dict(task="rte", budget="2%", model=model, data_dir=data_dir, runs_dir=str(runs), study="race"))
    report, failed = {"round": round_}, False
    stages = {
        "optuna": lambda: report.update(study=open_study(spec).study._study_id),
        "mlflow": lambda: report.update(tracker=StudyTracker(spec.where.tracking_uri, "race", spec.runs.artifacts, spec.to_dict())),
        "cache": lambda: report.update(examples=len(tokenized_split(get_task("rte"), "validation", model, 64, data_dir, str(spec.runs.tokenized))["labels"])),
    }
    for stage, action in stages.items():
        barrier(runs, stage, wait=not failed)  # a process that failed still lets the others through
        if not failed:
            try:
                action()
            except Exception as exc:
                failed, report["error"] = True, f"{stage}: {type(exc).__name__}: {str(exc)[:300]}"
    tracker = report.pop("tracker", None)
    report.update(tracking=bool(tracker and tracker.enabled), parent=tracker and tracker.parent_id)
    print(json.dumps(report), flush=True)
"""


def test_processes_starting_together_create_each_store_once(tmp_path, tiny_model, data_dir):
    args = [sys.executable, "-c", OPEN_STORES, tiny_model, data_dir, str(tmp_path)]
    workers = [
        subprocess.Popen([*args, str(i), str(PROCESSES), str(ROUNDS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=tmp_path)
        for i in range(PROCESSES)
    ]  # fmt: skip
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-3000:]
    reports = [json.loads(line) for out, _ in outputs for line in out.splitlines() if line.startswith("{")]
    assert len(reports) == PROCESSES * ROUNDS
    errors = [f"round {r['round']}: {r['error']}" for r in reports if "error" in r]
    assert not errors, errors
    for round_ in range(ROUNDS):
        seen = [r for r in reports if r["round"] == round_]
        assert all(r["tracking"] for r in seen), (
            f"round {round_}: tracking switched itself off: {outputs[0][1][-2000:]}"
        )
        assert len({r["parent"] for r in seen}) == 1 and len({r["study"] for r in seen}) == 1, seen
        assert {r["examples"] for r in seen} == {277}
        runs = tmp_path / f"round-{round_}"
        summaries = optuna.get_all_study_summaries(f"sqlite:///{runs}/optuna.db")
        assert [s.study_name for s in summaries] == ["race"]
        client = MlflowClient(f"sqlite:///{runs}/mlflow.db")
        experiment = client.get_experiment_by_name("race")
        parents = client.search_runs([experiment.experiment_id], "tags.`autopeft.role` = 'parent'")
        assert len(parents) == 1 and parents[0].info.run_id == seen[0]["parent"]
        assert sorted(e.name for e in client.search_experiments()) == ["Default", "race"]
        assert len(list(RunsDir.at(runs).tokenized.glob("*.json"))) == 1
