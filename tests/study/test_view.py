"""The read-side view of a study: the noise-aware Pareto set, picks, records and the learnt verdict; and the pure
Pareto arithmetic under it (knee, hypervolume)."""

import numpy as np
import optuna
import pytest

from autopeft import keys
from autopeft.errors import AutopeftError
from autopeft.pareto import LEARNT_MARGIN, hypervolume, knee_index, mean_metric, mean_values
from autopeft.study import StudyView, trial_record

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_knee_is_the_elbow_of_a_trade_off_curve():
    values = np.array([[0.70, 0.005], [0.69, 0.002], [0.66, 0.0008], [0.55, 0.0001]])
    assert knee_index(values, [True, False]) == 2


def test_knee_of_one_or_two_points_is_the_best_metric():
    assert knee_index(np.array([[0.6, 0.01], [0.7, 0.02]]), [True, False]) == 1


def test_knee_with_three_objectives_is_closest_to_the_ideal():
    values = np.array([[0.9, 0.01, 0.0], [0.8, 0.001, 0.5], [0.5, 0.0001, 0.9]])
    assert knee_index(values, [True, False, True]) == 1


@pytest.fixture()
def study():
    study = optuna.create_study(directions=["maximize", "minimize"])
    for metric, fraction in [(0.6, 0.001), (0.7, 0.003), (0.65, 0.004), (0.5, 0.0005), (0.71, 0.01)]:
        trial = study.ask()
        study.tell(trial, [metric, fraction])
    failed = study.ask()
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    return study


def test_pareto_set_excludes_dominated_and_failed_trials(study):
    assert [t.number for t in StudyView(study).pareto_trials] == [4, 1, 0, 3]


def test_pick_by_name_and_number(study):
    assert StudyView(study).pick_trial("best").number == 4
    assert StudyView(study).pick_trial("knee").number in {1, 0}
    assert StudyView(study).pick_trial("2").number == 2
    with pytest.raises(AutopeftError, match="did not finish"):
        StudyView(study).pick_trial("5")
    with pytest.raises(AutopeftError, match="has no trial 9"):
        StudyView(study).pick_trial("9")
    with pytest.raises(AutopeftError, match="use knee, best or a trial number"):
        StudyView(study).pick_trial("middle")


def test_hypervolume_of_a_staircase_in_the_study_units():

    # metric maximised from 0.4, trainable fraction minimised up to 0.005
    points = [[0.6, 0.001], [0.7, 0.003], [0.5, 0.004]]  # the last is dominated
    expected = (0.6 - 0.4) * (0.003 - 0.001) + (0.7 - 0.4) * (0.005 - 0.003)
    assert hypervolume(points, [True, False], [0.4, 0.005]) == pytest.approx(expected)
    assert hypervolume([[0.3, 0.001], [0.9, 0.006]], [True, False], [0.4, 0.005]) == 0.0
    assert hypervolume([], [True, False], [0.4, 0.005]) == 0.0


def test_pareto_set_without_confirmations_is_optunas(study):
    assert {t.number for t in StudyView(study).pareto_trials} == {t.number for t in study.best_trials}


def _confirm(study, number: int, *metrics: float) -> None:

    fraction = study.trials[number].values[1]
    runs = [{"seed": 100 + i, "values": [m, fraction], "metric": m} for i, m in enumerate(metrics)]
    study.set_user_attr(f"{keys.CONFIRM_PREFIX}{number}", runs)


def test_a_lucky_draw_that_does_not_repeat_loses_best_and_its_place(study):
    """Trial 4 (0.71 at 1%) confirms at 0.61: its mean 0.66 is dominated by trial 1 (0.70 at 0.3%)."""
    _confirm(study, 4, 0.61)
    assert StudyView(study).pick_trial("best").number == 1
    assert 4 not in {t.number for t in StudyView(study).pareto_trials}


def test_a_failed_confirmation_leaves_the_single_draw(study):

    study.set_user_attr(f"{keys.CONFIRM_PREFIX}4", [{"seed": 7, "fail_reason": "RuntimeError: out of memory"}])
    assert StudyView(study).pick_trial("best").number == 4
    assert mean_values(study.trials[4], study.user_attrs[f"{keys.CONFIRM_PREFIX}4"]) == ([0.71, 0.01], 1)


def test_picks_use_the_mean_over_seeds(study):

    _confirm(study, 1, 0.72, 0.74)  # 0.70, 0.72, 0.74: mean 0.72 beats trial 4's 0.71 with fewer parameters
    points = {t.number: (values, seeds) for t, values, seeds in StudyView(study).pareto}
    assert points[1] == (pytest.approx([0.72, 0.003]), 3)
    assert StudyView(study).pick_trial("best").number == 1 and 4 not in points


def test_a_study_selecting_on_neg_loss_picks_on_its_mean_and_records_the_task_metric_beside_it():
    """The first objective is what picks; ``metric`` in a record stays the task metric (here at odds with the score)."""

    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("autopeft.objectives", ["neg_loss", "params"])
    # (neg_loss, fraction, F1): trial 0 has the lower loss, trial 1 the higher F1 at the same size
    for neg_loss, fraction, f1 in [(-0.50, 0.003, 0.80), (-0.60, 0.003, 0.84)]:
        trial = study.ask()
        trial.set_user_attr("metric", f1)
        study.tell(trial, [neg_loss, fraction])
    assert StudyView(study).score_name == "neg_loss" and StudyView(study).pick_trial("best").number == 0
    study.set_user_attr(f"{keys.CONFIRM_PREFIX}0", [{"seed": 9, "values": [-0.80, 0.003], "metric": 0.86}])
    assert StudyView(study).pick_trial("best").number == 1  # trial 0's mean neg_loss -0.65 now loses to trial 1's -0.60
    record = trial_record(study.trials[0], confirmations=study.user_attrs[f"{keys.CONFIRM_PREFIX}0"])
    assert record["score"] == -0.50 and record["metric"] == 0.80
    assert record["score_mean"] == pytest.approx(-0.65) and record["metric_mean"] == pytest.approx(0.83)
    assert mean_metric(study.trials[1], None) == (0.84, 1)


def test_studies_from_before_the_score_choice_select_on_the_metric():

    assert StudyView(optuna.create_study(directions=["maximize", "minimize"])).score_name == "metric"


def _neg_loss_study(scores: list[float], prior: float | None) -> optuna.Study:

    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("autopeft.objectives", ["neg_loss", "params"])
    if prior is not None:
        study.set_user_attr(keys.PRIOR_NEG_LOSS, prior)
    for i, score in enumerate(scores):
        study.add_trial(optuna.trial.create_trial(values=[score, 0.001 * (i + 1)]))
    return study


def test_a_best_score_within_the_margin_of_the_label_prior_is_reported_as_not_learnt():
    """RTE with the default proxy: the best neg_loss -0.6843 against the prior's -0.6931 (1.3% of its loss)."""

    study = _neg_loss_study([-0.6951, -0.6843, -0.6900], prior=-0.6931)
    assert StudyView(study).learnt_margin() == pytest.approx((0.6931 - 0.6843) / 0.6931)
    assert StudyView(study).learnt_margin() < LEARNT_MARGIN
    warning = StudyView(study).not_learnt_warning()
    assert warning is not None and "-0.6931" in warning and "says little about full training" in warning


def test_a_score_well_above_the_prior_is_learnt_and_old_or_metric_studies_say_nothing():
    """MRPC with the default proxy: the best neg_loss -0.5835 against the prior's -0.6300 (7.4%)."""

    assert StudyView(_neg_loss_study([-0.63, -0.5835], prior=-0.6300)).not_learnt_warning() is None
    assert (
        StudyView(_neg_loss_study([-0.6], prior=None)).learnt_margin() is None
    )  # a study from before the prior was stored
    metric = _neg_loss_study([0.81], prior=-0.6300)
    metric.set_user_attr("autopeft.objectives", ["metric", "params"])
    assert StudyView(metric).learnt_margin() is None and StudyView(metric).not_learnt_warning() is None
