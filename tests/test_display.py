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
    eta.start(estimate_seconds=1000.5, workers=2)
    assert eta.render(None).plain == "0:16:40"  # the start-up estimate until a trial ends
    for seconds in (10, 12, 8, 10):
        eta.trial_ended(study, finished(study, seconds), target=10)
    assert eta.left == pytest.approx((10 - 4) * 10 / 2)  # six trials of ~10 s on two workers
    eta.trial_ended(study, finished(study, 100), target=5)
    assert eta.left == 0.0


def test_time_left_counts_the_confirmation_round_after_the_last_trial():
    study = optuna.create_study(directions=["maximize", "minimize"])
    eta = TrialsEta()
    eta.start(estimate_seconds=100.0, workers=2, tail_rounds=confirmation_rounds(4, 2))
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


def test_the_pareto_table_of_a_study_selecting_on_neg_loss_shows_the_score_and_the_task_metric():
    from rich.console import Console

    from autopeft.display import pareto_table
    from autopeft.pareto import CONFIRM_ATTR
    from autopeft.study import SPEC_ATTR

    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("autopeft.objectives", ["neg_loss", "params"])
    study.set_user_attr(SPEC_ATTR, {"select_on": "selection"})
    attrs = {"metric": 0.8123, "trainable_params": 768, "trainable_fraction": 3.4e-5, "config": {}}
    study.add_trial(optuna.trial.create_trial(values=[-0.5721, 3.4e-5], params={}, distributions={}, user_attrs=attrs))
    study.set_user_attr(f"{CONFIRM_ATTR}0", [{"seed": 1, "values": [-0.5821, 3.4e-5], "metric": 0.8323}])
    console = Console(width=200, record=True)
    console.print(pareto_table(study, "Pareto"))
    text = console.export_text()
    assert "neg_loss (selection, selects)" in text and "metric (selection)" in text
    assert "-0.5771 (mean, n=2)" in text and "0.8123" in text and "0.8223 (n=2)" in text
