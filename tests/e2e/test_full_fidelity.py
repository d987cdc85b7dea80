"""Successive halving up to full fidelity with the user's default in the race, through real searches on the tiny
model: a task it learns perfectly (so who wins is known), and one with random labels (nothing can learn it)."""

from __future__ import annotations

import json

import optuna
import pytest
from helpers import autopeft, mlflow_runs, polarity_search_args, write_polarity_task

from autopeft import keys
from autopeft.study import STATUS_QUO_SUFFIX, StudyView, first_rung

pytestmark = pytest.mark.slow
COMPLETE, PRUNED = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED


def run_search(tmp_path_factory, tiny_model, name: str, learning_rate: float, status_quo_rate: float, labels="word"):
    runs = tmp_path_factory.mktemp(name)
    files = write_polarity_task(runs / "task", learning_rate, status_quo_rate, labels)
    done = autopeft(*polarity_search_args(tiny_model, runs, name, files))
    assert done.returncode == 0, done.stderr[-3000:]
    storage = f"sqlite:///{runs}/optuna.db"
    return runs, done, optuna.load_study(study_name=name, storage=storage), storage


@pytest.fixture(scope="module")
def quo_wins(tmp_path_factory, tiny_model):
    """The trials cannot learn (learning rate 1e-7); the status quo learns everything."""
    return run_search(tmp_path_factory, tiny_model, "quo-wins", 1e-7, 1e-2)


@pytest.fixture(scope="module")
def trial_wins(tmp_path_factory, tiny_model):
    """The trials learn (1e-2); the status quo cannot."""
    return run_search(tmp_path_factory, tiny_model, "trial-wins", 1e-2, 1e-7)


def status_quo_runs(study: optuna.Study, storage: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study.study_name + STATUS_QUO_SUFFIX, storage=storage).get_trials()


@pytest.mark.parametrize("scenario", ["quo_wins", "trial_wins"])
def test_the_status_quo_runs_beside_the_trials_to_the_last_rung_and_outside_the_search(scenario, request):
    runs, done, study, storage = request.getfixturevalue(scenario)
    (quo,) = status_quo_runs(study, storage)
    assert quo.state == COMPLETE and quo.user_attrs["steps"] == quo.user_attrs["total_steps"]  # the end
    ladder = StudyView(study).spec.what.rungs
    levels = [r["level"] for r in quo.user_attrs["rungs"] if r["level"] is not None]
    assert levels == list(range(len(levels))) and len(levels) >= 1  # an entry at every rung on its way
    assert quo.user_attrs["config"]["training"]["learning_rate"] == (1e-2 if scenario == "quo_wins" else 1e-7)
    assert ladder.first > 0
    trials = study.get_trials()
    assert len([t for t in trials if t.state in (COMPLETE, PRUNED)]) == 4  # --trials 4: the status quo is not one
    assert all(t.params for t in trials)  # the sampler's study holds only configurations of the space
    listed = json.loads(autopeft("pareto", "--study", study.study_name, "--runs-dir", str(runs), "--json").stdout)
    (shown,) = [r for r in listed if r["trial"] == "status_quo"]
    assert shown["status_quo"] and shown["metric"] == quo.user_attrs["metric"] and shown["label"]
    trial_runs, _ = mlflow_runs(f"sqlite:///{runs}/mlflow.db", study.study_name)
    status = optuna.load_study(study_name=study.study_name, storage=storage)
    assert len(trial_runs) == len(status.get_trials())
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{runs}/mlflow.db")
    experiment = client.get_experiment_by_name(study.study_name)
    quo_runs = client.search_runs([experiment.experiment_id], "tags.`autopeft.role` = 'status_quo'")
    assert len(quo_runs) == 1 and quo_runs[0].data.metrics["metric"] == quo.user_attrs["metric"]


def test_when_nothing_beats_the_status_quo_best_is_the_status_quo_with_the_verdict(quo_wins, tmp_path):
    runs, done, study, storage = quo_wins
    best = StudyView(study).pick("best")
    assert best.is_status_quo and "nothing beat the status quo" in best.verdict
    assert best.verdict in done.stderr.replace("\n", " ") or "nothing beat the status quo" in done.stderr
    knee = StudyView(study).pick("knee")
    assert not knee.is_status_quo  # the status quo cannot be the knee
    exported = autopeft(
        "export", "--study", "quo-wins", "--runs-dir", str(runs), "--pick", "best", "--out", str(tmp_path)
    )
    assert exported.returncode == 0 and "nothing beat the status quo" in exported.stdout
    document = json.loads((tmp_path / "autopeft.json").read_text())
    assert document["status_quo"] is True and document["verdict"] == best.verdict
    assert document["config"]["training"]["learning_rate"] == 1e-2
    record = study.user_attrs["autopeft.search_runs"][-1]
    assert record["verdict"] == best.verdict


def test_when_a_trial_beats_the_status_quo_best_is_that_trial(trial_wins):
    runs, done, study, storage = trial_wins
    best = StudyView(study).pick("best")
    (quo,) = status_quo_runs(study, storage)
    assert not best.is_status_quo and best.trial.state == COMPLETE
    assert best.trial.user_attrs["metric"] > quo.user_attrs["metric"]
    assert "nothing beat the status quo" not in done.stderr


def test_a_promoted_trial_continued_its_own_training_to_the_end(trial_wins, tiny_model):
    """Its rungs are snapshots of one run: the training it stored is, step for step, the one an uninterrupted
    run of its configuration and seed does (a restart would repeat steps; a new optimiser would change them)."""
    from autopeft.training import ProxyRequest, run_proxy_trial

    runs, done, study, storage = trial_wins
    spec = StudyView(study).spec
    promoted = [t for t in study.get_trials(states=(COMPLETE,)) if len(t.user_attrs["rungs"]) >= 1]
    assert promoted, "a trial trained to the end passed at least one rung"
    trial = promoted[0]
    assert first_rung(trial) is not None and trial.user_attrs["steps"] == trial.user_attrs["total_steps"]
    assert [r["step"] for r in trial.user_attrs["rungs"]] == sorted(r["step"] for r in trial.user_attrs["rungs"])
    request = ProxyRequest(
        tiny_model, spec.what.task, None, trial.user_attrs["config"], spec.what.training.settings(),
        seed=spec.how.seed + trial.number, threads=1, cache_dir=str(spec.runs.tokenized),
        scored_on="selection", selection_seed=spec.how.seed,
    )  # fmt: skip
    uninterrupted = run_proxy_trial(request)
    assert trial.user_attrs["steps"] == uninterrupted["steps"]  # the last rung's step count, not a sum
    assert trial.user_attrs["train_losses"] == uninterrupted["train_losses"]
    assert trial.user_attrs["metrics"] == pytest.approx(uninterrupted["metrics"])


def test_the_sampler_learns_each_trial_at_the_highest_fidelity_it_reached_as_stored(trial_wins):
    from autopeft.samplers import Observation
    from autopeft.study import open_study

    runs, done, study, storage = trial_wins
    bound = open_study(StudyView(study).spec)  # the stored spec continues the same study
    ended = study.get_trials(states=(COMPLETE,))
    stopped = study.get_trials(states=(PRUNED,))  # which trial a rung stops depends on the order results arrive in;
    assert ended  # a trial learnt at its last rung is also checked, deterministically, in tests/samplers
    for trial in ended:  # neg_loss at the end of training, as stored
        assert bound.observed_values(trial) == Observation([trial.user_attrs["metrics"]["neg_loss"]], 1.0)
    for trial in stopped:  # its score at the rung it was stopped at, and that rung's fraction
        last = trial.user_attrs["rungs"][-1]
        assert first_rung(trial) is not None and last["fraction"] < 1
        assert bound.observed_values(trial) == Observation([last["score"]], last["fraction"])


def test_a_task_nothing_can_learn_raises_the_first_rung_to_its_cap_and_says_so(tmp_path_factory, tiny_model):
    runs, done, study, storage = run_search(tmp_path_factory, tiny_model, "random-labels", 1e-2, 1e-2, "random")
    stored = study.user_attrs[keys.FIRST_RUNG]
    cap = StudyView(study).spec.what.rungs.cap
    assert stored["fraction"] == pytest.approx(cap) and stored["settled"]
    assert [e.split(":")[0] for e in stored["events"]] == [
        "first rung raised from 2/9 to 1/3 of the schedule",  # doubled, but not past the cap
        "first rung left at its cap 1/3 of the schedule without learning the task",
    ]
    printed = done.stderr.replace("\n", " ")
    assert "first rung left at its cap 1/3 of the schedule without learning the task" in " ".join(printed.split())
    for trial in study.get_trials(states=(COMPLETE, PRUNED)):
        assert first_rung(trial)["fraction"] == pytest.approx(cap)  # every trial ranked at the raised rung


@pytest.mark.parametrize("scenario", ["quo_wins", "trial_wins"])
def test_the_status_quo_is_confirmed_on_as_many_seeds_as_best_and_weighed_mean_for_mean(scenario, request):
    """``best`` stands on its mean over seeds; one draw of the status quo against it let that draw's luck decide."""
    import statistics

    from autopeft.pareto import mean_metric

    runs, done, study, storage = request.getfixturevalue(scenario)
    view = StudyView(study)
    best = view.pick_trial("best")
    _, best_seeds = mean_metric(best, view.confirmations.get(best.number))
    quo_metric, quo_seeds = view.status_quo_metric()
    assert best_seeds >= 2 and quo_seeds == best_seeds
    confirmed = [run for run in view.confirmations["status_quo"] if "values" in run]
    seeds = [view.status_quo.user_attrs["seed"], *(run["seed"] for run in confirmed)]
    assert len(set(seeds)) == quo_seeds  # each run a seed of its own
    assert quo_metric == pytest.approx(
        statistics.fmean([view.status_quo.user_attrs["metric"]] + [r["metric"] for r in confirmed])
    )
    assert "confirmed the status quo with seed" in " ".join(done.stderr.split())
    listed = json.loads(autopeft("pareto", "--study", study.study_name, "--runs-dir", str(runs), "--json").stdout)
    (shown,) = [r for r in listed if r["trial"] == "status_quo"]
    assert shown["metric_seeds"] == quo_seeds and shown["metric_mean"] == pytest.approx(quo_metric)
    pick = view.pick("best")
    if pick.is_status_quo:
        assert f"against the status quo's {quo_metric:.4f} (mean of {quo_seeds} seeds)" in pick.verdict
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{runs}/mlflow.db")
    experiment = client.get_experiment_by_name(study.study_name)
    logged = client.search_runs(
        [experiment.experiment_id], "tags.`autopeft.role` = 'confirm' and tags.`autopeft.trial` = 'status_quo'"
    )
    assert sorted(int(r.data.tags["autopeft.seed"]) for r in logged) == sorted(seeds[1:])
