"""The start-up estimate and the time left count what a search will really train: units of the full schedule."""

from __future__ import annotations

import dataclasses
import datetime

import optuna
import pytest

from autopeft.study import SuccessiveHalving
from autopeft.timing import (
    DataStatistics,
    clock,
    confirmation_rounds,
    expected_units,
    reach,
    remaining_units,
    search_units,
    seconds_left,
    unit_seconds,
)
from autopeft.training import ProxySettings

optuna.logging.set_verbosity(optuna.logging.WARNING)
DATA = DataStatistics(train_examples=1000, train_tokens_per_example=50.0, eval_tokens=20_000)


def test_a_sample_larger_than_the_split_costs_the_split():
    capped = unit_seconds(ProxySettings(max_train_samples=4096), DATA, 22_700_000, threads=1)
    whole = unit_seconds(ProxySettings(max_train_samples=None), DATA, 22_700_000, threads=1)
    smaller = unit_seconds(ProxySettings(max_train_samples=500), DATA, 22_700_000, threads=1)
    assert capped == whole and smaller < whole


def test_the_batch_size_does_not_change_the_examples_trained():
    settings = ProxySettings(max_train_samples=None, batch_size=8)
    at_8 = unit_seconds(settings, DATA, 22_700_000, threads=1)
    at_16 = unit_seconds(dataclasses.replace(settings, batch_size=16), DATA, 22_700_000, threads=1)
    assert at_8 == pytest.approx(at_16, rel=0.01)


def test_successive_halving_lets_the_grace_through_then_a_third():
    policy = SuccessiveHalving(first=1 / 9, reduction=3, grace=3)
    assert policy.ladder() == pytest.approx((1 / 9, 1 / 3, 1.0))
    assert reach(policy, 16) == [16, 7, 4]  # 2 free + ceil(14 / 3); 2 free + ceil(5 / 3)
    assert expected_units(policy, 16) == pytest.approx(16 / 9 + 7 * 2 / 9 + 4 * 2 / 3)
    assert policy.ladder(1 / 3) == pytest.approx((1 / 3, 1.0))  # a raised first rung moves the ladder
    assert search_units(policy, 16, confirm=2, status_quo=True) == pytest.approx(expected_units(policy, 16) + 3)


def trial(study, state, steps, total, seconds, rungs=()):
    end = datetime.datetime.now()
    attrs = {"steps": steps, "total_steps": total, "rungs": [{"fraction": f} for f in rungs]}
    values = [0.5, 0.1] if state == optuna.trial.TrialState.COMPLETE else None
    made = optuna.trial.create_trial(state=state, values=values, params={}, distributions={}, user_attrs=attrs)
    made.datetime_start, made.datetime_complete = end - datetime.timedelta(seconds=seconds), end
    study.add_trial(made)


def test_the_time_left_is_the_units_left_at_the_measured_seconds_per_unit_over_the_workers():
    policy = SuccessiveHalving(first=1 / 9, reduction=3, grace=3)
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial(study, optuna.trial.TrialState.COMPLETE, 90, 90, seconds=900)  # one unit in 900 s
    trial(study, optuna.trial.TrialState.PRUNED, 10, 90, seconds=100)  # a ninth of a unit in 100 s
    unit_s = (900 + 100) / (1 + 1 / 9)
    left = seconds_left(study, policy, target=4, workers=2, confirm=2, status_quo_owed=False)
    assert left == pytest.approx((expected_units(policy, 2) + 2) * unit_s / 2)
    assert seconds_left(optuna.create_study(directions=["maximize", "minimize"]), policy, 4, 2, 2, True) is None


def test_a_running_trial_past_a_rung_owes_what_the_rungs_ahead_may_let_it_train():
    policy = SuccessiveHalving(first=1 / 9, reduction=3, grace=3)
    study = optuna.create_study(directions=["maximize", "minimize"])
    running = study.ask()
    running.set_user_attr("rungs", [{"fraction": 1 / 3}])
    frozen = study.trials[-1]
    counts = reach(policy, 100)
    assert remaining_units(policy, frozen) == pytest.approx(1 - 1 / 3)  # promoted at 1/3: the last stretch
    running.set_user_attr("rungs", [{"fraction": 1 / 9}])
    frozen = study.trials[-1]  # promoted at 1/9: it trains to 1/3, then goes on as often as the rung lets trials on
    assert remaining_units(policy, frozen) == pytest.approx(2 / 9 + counts[2] / counts[1] * 2 / 3)


def test_confirmation_rounds_follow_the_workers():
    rounds = {(0, 2): 0, (1, 2): 1, (2, 2): 1, (4, 2): 2, (3, 2): 2, (4, 1): 4, (2, 4): 1, (4, 4): 2}
    assert {key: confirmation_rounds(*key) for key in rounds} == rounds


def test_a_study_owes_its_status_quo_only_when_it_has_one(tiny_model, tmp_path):
    from helpers import make_spec

    from autopeft.study import StudyView, open_study
    from autopeft.timing import confirmation_units, study_seconds_left

    left = {}
    for budget in ("2%", "0.03%"):  # LoRA r=1 on query and value needs 384 parameters: 0.03% (302) has no status quo
        spec = make_spec(
            task="rte", budget=budget, model=tiny_model, data_dir=None, runs_dir=str(tmp_path), study=budget
        )
        bound = open_study(spec)
        trial(bound.study, optuna.trial.TrialState.COMPLETE, 90, 90, seconds=900)
        view, how = StudyView(bound.study), spec.how
        has = bound.status_quo.config is not None
        assert has == (budget == "2%")
        expected = seconds_left(
            bound.study, spec.what.rungs, how.trials, how.workers, confirmation_units(how.confirm, has), has
        )
        left[budget] = study_seconds_left(view)
        assert left[budget] == pytest.approx(expected)
        assert study_seconds_left(view, how.model_copy(update={"workers": 1})) == pytest.approx(expected * how.workers)
    assert left["2%"] > left["0.03%"]  # the first owes the status quo's unit and its confirmation


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "-:--:--"), (0.4, "0:00:00"), (59.6, "0:01:00"), (3725.0, "1:02:05"), (-3.0, "0:00:00")],
)
def test_clock_rounds_to_the_second_and_shows_an_unknown_duration(seconds, shown):
    assert clock(seconds) == shown
