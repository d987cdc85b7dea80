"""A real small search, as a user runs it: the CLI, a local Ray, SQLite Optuna storage, an MLflow store."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import optuna
import pytest
from helpers import autopeft, mlflow_runs, tiny_search_args
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow
DONE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
TRIALS = 12
"""Past the sampler's 8 quasi-random trials, so its model proposes some."""


@pytest.fixture(scope="module")
def search(tmp_path_factory, tiny_model, data_dir):
    runs = tmp_path_factory.mktemp("runs")
    args = tiny_search_args(tiny_model, data_dir, runs, "e2e", TRIALS, "--workers", "2")
    first = autopeft(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    return runs, args, first


def children(client: MlflowClient):
    return mlflow_runs(client.tracking_uri, "e2e")


def test_each_trial_is_printed_with_its_score_and_metric_and_nothing_raised_in_the_callbacks(search):
    """Ray Tune logs and swallows an exception raised in a searcher's callback: the log must hold none."""
    runs, _, first = search
    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{runs}/optuna.db")
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    pruned = study.get_trials(states=(optuna.trial.TrialState.PRUNED,))
    text = " ".join(first.stderr.split())
    lines = [line for line in first.stderr.splitlines() if " finished (" in line and line.startswith("trial ")]
    assert len(lines) == len(complete) and all("accuracy 0." in line for line in lines)
    assert text.count("stopped at rung") == len(pruned)
    assert "status quo (LoRA r=8 (query, value)) trained to the end" in text
    assert "Traceback" not in first.stderr and "Error stopping trial" not in first.stderr


def test_study_holds_the_finished_trials_within_budget(search):
    runs, _, _ = search
    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{runs}/optuna.db")
    complete = study.get_trials(states=DONE)
    assert len(complete) == TRIALS
    limit = study.user_attrs["autopeft.limit"]
    configs = [str(sorted(t.params.items())) for t in study.get_trials()]
    assert len(set(configs)) == len(configs), "two workers received the same configuration"
    for trial in complete:
        assert trial.user_attrs["trainable_params"] <= limit
        assert trial.user_attrs["trainable_fraction"] <= 0.02
        values = trial.values or trial.user_attrs["values_at_stop"]
        assert values[1] == trial.user_attrs["trainable_fraction"]


def test_the_sampler_assumes_what_the_study_stores_and_never_fell_back(search, tiny_model, data_dir):
    """The optimiser's invariant on the real path: its exact objective is the stored value, its model was used."""
    from autopeft.study import StudyView, open_study

    runs, _, _ = search
    bound = open_study(StudyView.load("e2e", f"sqlite:///{runs}/optuna.db").spec)  # the stored spec continues it
    known = bound.known_objectives()
    complete = bound.study.get_trials(states=DONE)
    assert len(complete) >= TRIALS
    for trial in complete:
        values = trial.values or trial.user_attrs["values_at_stop"]
        assert known[1].value(trial.params) == values[1], trial.number
    kinds = [t.user_attrs["proposal"]["kind"] for t in complete]
    assert "fallback" not in kinds and kinds.count("bayes") >= 2, kinds


def test_the_stored_label_prior_is_the_selection_splits_and_the_cli_warns_as_the_check_says(search, tiny_model):
    """The floor the not-learnt check compares with is the prior of the examples the trials were scored on."""
    from autopeft import keys
    from autopeft.objectives import prior_neg_loss
    from autopeft.study import StudyView
    from autopeft.tasks import get_task
    from autopeft.training.data import training_and_evaluation

    runs, _, first = search
    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{runs}/optuna.db")
    view, task = StudyView(study), get_task("rte")
    seed = study.user_attrs[keys.SELECTION_SEED]
    what = view.spec.what
    train, dev = training_and_evaluation(task, "selection", tiny_model, what.training.max_length, what.data_dir, None,
                                         seed)  # fmt: skip
    expected = prior_neg_loss(train["labels"], dev["labels"][:64], regression=False)
    assert study.user_attrs[keys.PRIOR_NEG_LOSS] == pytest.approx(expected)
    warning = view.not_learnt_warning()
    assert (warning is not None) == ("did not learn this task" in " ".join(first.stderr.split()))


def test_mlflow_has_one_parent_and_the_pareto_tags_match_the_cli(search):
    runs, _, _ = search
    client = MlflowClient(f"sqlite:///{runs}/mlflow.db")
    trials, parents = children(client)
    assert len(parents) == 1 and len(trials) == TRIALS
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in trials)
    pareto = json.loads(autopeft("pareto", "--runs-dir", str(runs), "--json").stdout)
    tagged = {int(r.data.tags["autopeft.trial"]) for r in trials if r.data.tags["autopeft.pareto"] == "true"}
    assert tagged == {p["trial"] for p in pareto if p["trial"] != "status_quo"} and tagged
    assert [p["label"] for p in pareto if p["trial"] == "status_quo"] == ["LoRA r=8 (query, value)"]  # beside it
    for entry in pareto:
        assert {"trial", "metric", "trainable_params", "trainable_fraction", "params"} <= set(entry)
    artifacts = [a.path for a in client.list_artifacts(parents[0].info.run_id)]
    assert {"pareto.csv", "pareto.png"} <= set(artifacts)  # the review needs no `report` first


def test_mlflow_opens_as_model_training_and_charts_the_search(search):
    """The experiment's kind, the parent's progress metrics per finished trial, and readable child names."""
    runs, _, _ = search
    client = MlflowClient(f"sqlite:///{runs}/mlflow.db")
    experiment = client.get_experiment_by_name("e2e")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    trials, parents = children(client)
    parent = parents[0].info.run_id
    for key in ("pareto_size", "hypervolume", "finished_trials"):
        history = client.get_metric_history(parent, key)
        assert len(history) >= TRIALS, key
    steps = [m.value for m in client.get_metric_history(parent, "finished_trials")]
    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{runs}/optuna.db")
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert max(steps) == len(complete) and client.get_metric_history(parent, "hypervolume")[-1].value > 0
    for run in trials:
        number = run.data.tags["autopeft.trial"]
        assert re.match(rf"trial-{number}( \d\.\d{{4}})? lora L", run.info.run_name), run.info.run_name  # its score
    one = trials[0]
    assert {"metric", "trainable_params", "trainable_fraction", "accuracy"} <= set(one.data.metrics)
    assert "config.json" in [a.path for a in client.list_artifacts(one.info.run_id)]


def test_the_picks_were_confirmed_with_other_seeds_and_picked_on_the_mean(search):
    """best and knee were trained again (another seed, the same exact objectives) before the search ended."""
    from autopeft.defaults import CONFIRM
    from autopeft.execution.confirmations import CONFIRM_SEED_OFFSET
    from autopeft.pareto import mean_values
    from autopeft.study import StudyView

    runs, _, first = search
    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{runs}/optuna.db")
    view = StudyView(study)
    confirmations = view.confirmations
    assert 1 <= sum(len(runs) for key, runs in confirmations.items() if key != "status_quo") <= CONFIRM
    unconfirmed = study.user_attrs["autopeft.search_runs"][0]["unconfirmed"]
    for pick in ("best", "knee"):
        trial = view.pick_trial(pick)
        done = [run for run in confirmations.get(trial.number, []) if "values" in run]
        if not done:  # confirmations moved the pick until none was left: an event, stored and printed
            assert sum(len(r) for k, r in confirmations.items() if k != "status_quo") == CONFIRM
            assert trial.number in unconfirmed
            assert "unconfirmed" in first.stderr and f"trial {trial.number}" in " ".join(first.stderr.split())
            continue
        assert done[0]["seed"] == trial.number + CONFIRM_SEED_OFFSET  # spec seed 0: trial seeds are their numbers
        assert all(run["values"][1:] == trial.values[1:] for run in done)  # exact objectives do not move
        assert mean_values(trial, done)[1] == 1 + len(done)
    assert "confirmed trial" in first.stderr
    client = MlflowClient(f"sqlite:///{runs}/mlflow.db")
    experiment = client.get_experiment_by_name("e2e")
    logged = client.search_runs([experiment.experiment_id], "tags.`autopeft.role` = 'confirm'")
    assert len(logged) == sum(1 for runs in confirmations.values() for run in runs if "values" in run)


def test_the_confirmations_train_on_the_worker_processes_the_trials_used(search):
    """No new process for the confirmations: Tune's reused workers, which imported the libraries and read the
    data for the trials, train them too (a new process pays those imports again, seconds per run)."""
    from autopeft.study import StudyView

    runs, _, _ = search
    first_run = sorted((runs / "logs" / "e2e").glob("timings-*.jsonl"))[0]
    rows = [json.loads(line) for line in first_run.read_text().splitlines()]
    trained = {row["worker_pid"] for row in rows if "trial" in row or row.get("status_quo")}
    confirmed = [row for row in rows if "confirmation" in row]
    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{runs}/optuna.db")
    stored = StudyView(study).confirmations
    assert len(confirmed) == sum(len(runs) for runs in stored.values()) > 0
    assert {row["worker_pid"] for row in confirmed} <= trained
    assert len(trained) == 2  # --workers 2: two processes, reused from the first trial to the last confirmation


def _set_scores(storage_file, study: str, scores: dict[int, float]) -> None:
    """Overwrite the first objective of finished trials in a SQLite store (Optuna has no API to change a value)."""
    import sqlite3

    with sqlite3.connect(storage_file) as db:
        for number, score in scores.items():
            db.execute(
                "UPDATE trial_values SET value = ? WHERE objective = 0 AND trial_id = (SELECT trial_id FROM trials"
                " JOIN studies USING (study_id) WHERE study_name = ? AND number = ?)",
                (score, study, number),
            )


def test_a_pick_left_unconfirmed_when_the_confirmations_ran_out_is_stored_printed_and_confirmed_by_a_rerun(
    tmp_path, tiny_model, data_dir
):
    """Three trials scored so that confirming the best (a lucky -0.55, where real training gives about -0.69)
    hands ``best`` and ``knee`` to the unconfirmed middle trial (-0.56), the one confirmation run allowed spent.
    The study selects on neg_loss (a metric of random draws cannot be set apart)."""
    from autopeft.study import StudyView

    # nothing stops at a rung (--grace 100): three trials trained to the end, selected on neg_loss
    args = tiny_search_args(tiny_model, data_dir, tmp_path, "few", 3, "--workers", "1", "--grace", "100",
                            "--objectives", "neg_loss,params", "--confirm", "0")  # fmt: skip
    assert autopeft(*args).returncode == 0
    study = optuna.load_study(study_name="few", storage=f"sqlite:///{tmp_path}/optuna.db")
    large, middle, small = sorted(study.trials, key=lambda t: -t.values[1])
    assert large.values[1] > middle.values[1] > small.values[1]
    _set_scores(tmp_path / "optuna.db", "few", {large.number: -0.55, middle.number: -0.56, small.number: -0.70})
    study = optuna.load_study(study_name="few", storage=f"sqlite:///{tmp_path}/optuna.db")
    view = StudyView(study)
    assert view.pick_trial("best").number == large.number and view.pick_trial("knee").number == middle.number

    first = autopeft(*args[:-4], "--confirm", "1", "--trials", "3")
    assert first.returncode == 0, first.stderr[-3000:]
    study = optuna.load_study(study_name="few", storage=f"sqlite:///{tmp_path}/optuna.db")
    view = StudyView(study)
    runs = view.confirmations
    assert sorted(runs, key=str) == [large.number, "status_quo"] and len(runs[large.number]) == 1
    assert len(runs["status_quo"]) == 1  # beside best's confirmation: the two seeds it was about to have
    assert {view.pick_trial(pick).number for pick in ("best", "knee")} == {middle.number}
    record = study.user_attrs["autopeft.search_runs"][-1]
    assert record["confirmations"] == 2 and record["unconfirmed"] == [middle.number]
    assert "after 1 confirmation run the pick" in " ".join(first.stderr.split())
    assert f"the pick trial {middle.number} is unconfirmed" in " ".join(first.stderr.split())

    again = autopeft(*args[:-4], "--confirm", "1", "--trials", "3")
    assert again.returncode == 0, again.stderr[-3000:]
    study = optuna.load_study(study_name="few", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert len(StudyView(study).confirmations.get(middle.number, [])) == 1  # the same command confirmed it
    assert len(study.trials) == 3


def test_trials_json_lists_every_trial_with_its_state(search):
    runs, _, _ = search
    trials = json.loads(autopeft("trials", "--runs-dir", str(runs), "--study", "e2e", "--json").stdout)
    stored = optuna.load_study(study_name="e2e", storage=f"sqlite:///{runs}/optuna.db").get_trials()
    assert [t["state"] for t in trials] == [t.state.name for t in stored]
    assert {t["state"] for t in trials} <= {"COMPLETE", "PRUNED"} and len(stored) == TRIALS


def test_export_knee_loads_in_peft_with_the_recorded_count(search, tmp_path, tiny_model):
    from peft import PeftConfig, get_peft_model

    from autopeft.methods.build import peft_trainable_params
    from autopeft.models import load_model

    runs, _, _ = search
    out = tmp_path / "best"
    result = autopeft("export", "--runs-dir", str(runs), "--study", "e2e", "--pick", "knee", "--out", str(out))
    assert result.returncode == 0, result.stderr
    meta = json.loads((out / "autopeft.json").read_text())
    assert {"model", "task", "study", "trial", "trainable_params", "metric"} <= set(meta)
    assert meta["model"] == tiny_model and meta["task"] == "rte" and meta["study"] == "e2e"
    model = get_peft_model(load_model(tiny_model, 2), PeftConfig.from_pretrained(str(out)))
    assert peft_trainable_params(model) == meta["trainable_params"]


def test_the_same_command_continues_the_study(search):
    runs, args, _ = search
    storage = f"sqlite:///{runs}/optuna.db"
    before = {t.number: t.values for t in optuna.load_study(study_name="e2e", storage=storage).get_trials()}
    again = autopeft(*args[:-1], str(TRIALS + 1))  # the same command, asking for one more trial
    assert again.returncode == 0, again.stderr[-3000:]
    after = optuna.load_study(study_name="e2e", storage=storage).get_trials(states=DONE)
    assert len(after) == TRIALS + 1
    assert {t.number: t.values for t in after if t.number in before} == before
    trials, parents = children(MlflowClient(f"sqlite:///{runs}/mlflow.db"))
    assert len(parents) == 1 and len(trials) == TRIALS + 1


def test_ui_serves_the_study_on_loopback(search):
    import socket
    import time
    import urllib.request

    runs, _, _ = search
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "autopeft.cli", "ui", "--runs-dir", str(runs), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline, body = time.monotonic() + 120, None
        while time.monotonic() < deadline and body is None:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=e2e", timeout=5
                ) as reply:
                    body = json.loads(reply.read())
            except OSError:
                assert server.poll() is None, "autopeft ui exited"
                time.sleep(1)
        assert body is not None and body["experiment"]["name"] == "e2e"
    finally:
        import os
        import signal

        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
