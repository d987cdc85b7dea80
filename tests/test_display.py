"""The search's time left comes from the trials as they end."""

from __future__ import annotations

import datetime

import optuna
import pytest

from autopeft.display import TrialsEta
from autopeft.study import confirmation_rounds

optuna.logging.set_verbosity(optuna.logging.WARNING)


def finished(study: optuna.Study, seconds: float) -> optuna.trial.FrozenTrial:
    end = datetime.datetime.now()
    trial = optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE, values=[0.5, 0.1], params={}, distributions={}
    )
    trial.datetime_start, trial.datetime_complete = end - datetime.timedelta(seconds=seconds), end
    study.add_trial(trial)
    return study.trials[-1]


def test_time_left_is_trials_left_times_the_median_trial_over_the_workers():
    study = optuna.create_study(directions=["maximize", "minimize"])
    eta = TrialsEta()
    eta.start(estimate_seconds=1000.5, workers=2, trials_left=10)
    assert eta.render(None).plain == "0:16:40"  # the start-up estimate until a trial ends
    for seconds in (10, 12, 8, 10):
        eta.trial_ended(study, finished(study, seconds), target=10)
    assert eta.left == pytest.approx((10 - 4) * 10 / 2)  # six trials of ~10 s on two workers
    eta.trial_ended(study, finished(study, 100), target=5)
    assert eta.left == 0.0


def test_time_left_counts_the_confirmation_round_after_the_last_trial():
    study = optuna.create_study(directions=["maximize", "minimize"])
    eta = TrialsEta()
    eta.start(estimate_seconds=100.0, workers=2, trials_left=2, tail_rounds=confirmation_rounds(4, 2))
    eta.trial_ended(study, finished(study, 30), target=2)
    # one trial left on two workers, then best and knee together, then the picks that moved
    assert eta.left == pytest.approx(1 * 30 / 2 + 2 * 30)
    eta.trial_ended(study, finished(study, 30), target=2)
    assert eta.left == pytest.approx(2 * 30)  # the trials are done; the confirmations are not


def test_confirmation_rounds_follow_the_workers():
    rounds = {
        (0, 2): 0,
        (1, 2): 1,
        (2, 2): 1,
        (4, 2): 2,
        (3, 2): 2,
        (4, 1): 4,
        (2, 4): 1,
        (4, 4): 2,
    }  # (confirm, workers): rounds
    assert {key: confirmation_rounds(*key) for key in rounds} == rounds
