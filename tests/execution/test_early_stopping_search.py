"""Early stopping in a real search: Ray trials ask the rung board, pruned trials are kept with their metric."""

from __future__ import annotations

import json

import optuna
import pytest
from helpers import autopeft, mlflow_runs, tiny_search_args, trials_of
from mlflow import MlflowClient

from autopeft.execution import RungBoard
from autopeft.study import EarlyStopping

pytestmark = pytest.mark.slow
PRUNED, COMPLETE = optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE


def test_dominated_trials_stop_at_a_rung_exactly_as_the_policy_says(tmp_path, tiny_model, data_dir):
    # One worker, so each decision saw exactly the trials before it; any trial in a better front stops it.
    args = tiny_search_args(
        tiny_model, data_dir, tmp_path, "es", 6, "--task", "stsb", "--workers", "1", "--sampler", "random", "--early-stopping",
        "--early-stopping-grace", "2", "--early-stopping-reduction", "100", "--epochs", "1", "--max-train-samples", "96",
    )  # fmt: skip
    run = autopeft(*args)
    assert run.returncode == 0, run.stderr[-3000:]
    trials = trials_of("es", f"sqlite:///{tmp_path}/optuna.db")
    assert {t.state for t in trials} <= {PRUNED, COMPLETE} and len(trials) == 6
    assert any(t.state == PRUNED for t in trials), "these seeds prune at least one trial"

    board = RungBoard(EarlyStopping(grace=2, reduction=100))
    for trial in trials:  # replay the policy on the stored rung scores (minus the validation loss)
        scores, rungs = trial.user_attrs["rung_scores"], trial.user_attrs["rung_metrics"]
        assert all(s < 0 for s in scores) and len(scores) == len(rungs)
        stops = [board.decide(trial.number, r, s, trial.user_attrs["trainable_params"]) for r, s in enumerate(scores)]
        if trial.state == COMPLETE:
            assert len(rungs) == 2 and not any(stops)
        else:
            assert stops == [False] * (len(rungs) - 1) + [True]
            assert trial.user_attrs["metric"] == rungs[-1]
            # the study's score (neg_loss) at the stop is the rung's, as the rung scored it
            assert trial.user_attrs["values_at_stop"][0] == scores[-1]
            assert trial.user_attrs["steps"] < max(t.user_attrs["steps"] for t in trials if t.state == COMPLETE)

    listed = json.loads(autopeft("trials", "--study", "es", "--runs-dir", str(tmp_path), "--json").stdout)
    assert {r["trial"]: r["state"] for r in listed} == {t.number: t.state.name for t in trials}
    pareto = json.loads(autopeft("pareto", "--study", "es", "--runs-dir", str(tmp_path), "--json").stdout)
    assert {r["trial"] for r in pareto} <= {t.number for t in trials if t.state == COMPLETE}
    runs, _ = mlflow_runs(f"sqlite:///{tmp_path}/mlflow.db", "es")
    status = {int(r.data.tags["autopeft.trial"]): r.info.status for r in runs}
    assert status == {t.number: "KILLED" if t.state == PRUNED else "FINISHED" for t in trials}
    client, by_number = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db"), {t.number: t for t in trials}
    for run in runs:  # the loss curve and the rung scores of every trial, stopped or not
        trial = by_number[int(run.data.tags["autopeft.trial"])]
        history = client.get_metric_history(run.info.run_id, "train_loss")
        assert [m.step for m in history] == list(range(1, trial.user_attrs["steps"] + 1))
        assert [m.value for m in history] == pytest.approx(trial.user_attrs["train_losses"])
        assert run.data.metrics["rung1_score"] == trial.user_attrs["rung_scores"][0]
