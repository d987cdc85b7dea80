"""A dataset the project has never seen (JSONL, two texts, three classes) through search, export, evaluate,
retrain, baselines and report; and the storage read by optuna-dashboard as it is."""

from __future__ import annotations

import json
import sqlite3
from wsgiref.util import setup_testing_defaults

import optuna
import pandas as pd
import pytest
from helpers import autopeft, write_similarity_task
from mlflow.tracking import MlflowClient

from autopeft.study.view import StudyView

pytestmark = pytest.mark.slow

SMALL = ["--epochs", "1", "--max-train-samples", "64", "--max-eval-samples", "48"]


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_model, data_dir):
    """A finished 6-trial study on the three-class JSONL task: (runs folder, task file)."""
    root = tmp_path_factory.mktemp("task-file")
    task = write_similarity_task(data_dir, root / "sim")
    runs = root / "runs"
    done = autopeft(
        "search", "--task", task, "--budget", "5%", "--model", tiny_model, *SMALL, "--runs-dir", str(runs),
        "--study", "sim", "--trials", "6", "--workers", "2", "--sampler", "random",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return runs, task


def _study(runs, name="sim") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{runs}/optuna.db")


def _runs_of(runs, experiment: str, role: str) -> list:
    client = MlflowClient(f"sqlite:///{runs}/mlflow.db")
    found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return [r for r in found if r.data.tags.get("autopeft.role") == role]


def test_the_search_scores_the_task_files_metric(searched):
    runs, task = searched
    study = _study(runs)
    assert (
        study.user_attrs["autopeft.spec"]["what"]["task"] == task
        and "name: similarity3" in study.user_attrs["autopeft.task_yaml"]
    )
    trial = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))[0]
    assert set(trial.user_attrs["metrics"]) == {"macro_f1", "accuracy", "neg_loss"}
    # the default objective is the task file's metric, at full fidelity; the loss is measured beside it
    assert trial.values[0] == trial.user_attrs["metrics"]["macro_f1"] == trial.user_attrs["metric"]
    assert trial.user_attrs["metric"] == trial.user_attrs["metrics"]["macro_f1"]


def test_export_then_scored_on_the_same_and_on_other_tasks(searched, tmp_path, data_dir):
    runs, task = searched
    out = tmp_path / "best"
    done = autopeft("export", "--runs-dir", str(runs), "--study", "sim", "--pick", "knee", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "autopeft.json").read_text())["task"] == task
    same = autopeft("evaluate", "--config", str(out), "--seeds", "2", "--runs-dir", str(runs), *SMALL, "--json")
    assert same.returncode == 0, same.stderr[-2000:]
    result = json.loads(same.stdout)
    assert result["task"] == "similarity3" and result["metric_name"] == "macro_f1"
    assert [r["seed"] for r in result["runs"]] == [0, 1] and result["seeds"] == 2
    transfer = autopeft(
        "evaluate", "--study", "sim", "--pick", "best", "--task", "stsb", "--data-dir", data_dir,
        "--runs-dir", str(runs), *SMALL, "--json",
    )  # fmt: skip
    assert transfer.returncode == 0, transfer.stderr[-2000:]
    moved = json.loads(transfer.stdout)
    assert moved["metric_name"] == "pearson" and set(moved["metrics"]) >= {"pearson", "spearman"}


def test_evaluate_needs_exactly_one_configuration(searched):
    runs, _ = searched
    done = autopeft("evaluate", "--runs-dir", str(runs), "--task", "rte")
    assert done.returncode == 2 and "give either --config" in done.stderr and "Traceback" not in done.stderr


def test_retrain_stores_seeded_runs_in_the_study_and_mlflow(searched):
    runs, _ = searched
    args = ["retrain", "--runs-dir", str(runs), "--study", "sim", "--pick", "pareto", "--seeds", "2", "--epochs", "1"]
    done = autopeft(*args, "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout)
    # the Pareto set `--pick pareto` names is on the means over each trial's seeds, confirmations included: it
    # is Optuna's best_trials (single draws) only while no confirmation moved a trial (it did on a loaded CPU)
    pareto = {t.number for t in StudyView(_study(runs)).pareto_trials}
    assert {r["trial"] for r in results} == pareto
    assert all(r["summary"]["seeds"] == 2 and r["settings"] == "e1-all-b16-l128" for r in results)
    stored = _study(runs).user_attrs
    for number in pareto:
        assert [r["seed"] for r in stored[f"autopeft.retrain.{number}"]] == [0, 1]
    logged = _runs_of(runs, "sim", "retrain")
    assert sorted((r.data.tags["autopeft.trial"], r.data.tags["autopeft.seed"]) for r in logged) == sorted(
        (str(n), str(s)) for n in pareto for s in (0, 1)
    )
    assert autopeft(*args).returncode == 0
    assert len(_runs_of(runs, "sim", "retrain")) == len(logged)  # stored seeds are not trained again


def test_baselines_then_report_draws_them_with_the_pareto_front(searched):
    runs, _ = searched
    done = autopeft("baselines", "--runs-dir", str(runs), "--study", "sim", "--seeds", "2", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    results = {r["name"]: r for r in json.loads(done.stdout)}
    assert set(results) == {"lora", "houlsby", "pfeiffer", "prefix", "full"}
    assert results["full"]["over_budget"] and not results["houlsby"]["over_budget"]
    name = "similarity3-tiny-bert0-5pct-baselines"
    assert len(_study(runs, name).trials) == 10
    logged = _runs_of(runs, name, "baseline")
    assert sorted({r.data.tags["autopeft.seed"] for r in logged}) == ["0", "1"] and len(logged) == 10

    out = runs / "report"
    (parent,) = _runs_of(runs, "sim", "parent")
    client = MlflowClient(f"sqlite:///{runs}/mlflow.db")
    client.update_run(parent.info.run_id, status="RUNNING")  # as while a search continues the study
    done = autopeft("report", "--runs-dir", str(runs), "--study", "sim", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert client.get_run(parent.info.run_id).info.status == "RUNNING"  # the report only attached its files
    png = (out / "pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    table = pd.read_csv(out / "trials.csv")
    assert len(table) == 6 and table["knee"].sum() == 1 and table["pareto"].any()
    summary = (out / "summary.md").read_text()
    assert "## Baselines" in summary and "Houlsby adapter" in summary and "![Pareto plot](pareto.png)" in summary

    from autopeft.report import collect
    from autopeft.study import StudyView

    drawn = collect(StudyView(_study(runs)), f"sqlite:///{runs}/optuna.db")
    assert len(drawn.baselines) == 5 and drawn.knee is not None
    assert {"pareto.png", "trials.csv", "summary.md"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_the_storage_is_plain_optuna_that_optuna_dashboard_serves(searched, tmp_path):
    import optuna_dashboard

    runs, _ = searched
    storage = f"sqlite:///{runs}/optuna.db"
    plain = f"sqlite:///{tmp_path}/plain.db"
    optuna.create_study(storage=plain)

    def tables(url: str) -> set[str]:
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            return {row[0] for row in db.execute("select name from sqlite_master where type='table'")}

    assert tables(storage) == tables(plain)  # no private tables: Optuna's schema only

    app = optuna_dashboard.wsgi(storage)

    def get(path: str, query: str = "") -> dict:
        environ: dict = {}
        setup_testing_defaults(environ)
        environ.update(PATH_INFO=path, QUERY_STRING=query, REQUEST_METHOD="GET")
        status = []
        body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
        assert status[0].startswith("200"), (path, status, body[:300])
        return json.loads(body)

    studies = {s["study_name"]: s["study_id"] for s in get("/api/studies")["study_summaries"]}
    assert "sim" in studies
    detail = get(f"/api/studies/{studies['sim']}", "after=0")
    assert len(detail["trials"]) == 6
    assert {"autopeft.spec", "autopeft.limit"} <= {a["key"] for a in detail["user_attrs"]}
    attrs = {a["key"] for a in detail["trials"][0]["user_attrs"]}
    assert {"config", "metrics", "trainable_params"} <= attrs
