"""The search's time left comes from the trials as they end."""

from __future__ import annotations

import datetime

import optuna
import pytest

from autopeft.display import TrialsEta

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
