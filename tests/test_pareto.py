import numpy as np
import optuna
import pytest

from autopeft.errors import AutopeftError
from autopeft.pareto import knee_index, pareto_trials, pick_trial

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
    assert [t.number for t in pareto_trials(study)] == [4, 1, 0, 3]


def test_pick_by_name_and_number(study):
    assert pick_trial(study, "best").number == 4
    assert pick_trial(study, "knee").number in {1, 0}
    assert pick_trial(study, "2").number == 2
    with pytest.raises(AutopeftError, match="did not finish"):
        pick_trial(study, "5")
    with pytest.raises(AutopeftError, match="has no trial 9"):
        pick_trial(study, "9")
    with pytest.raises(AutopeftError, match="use knee, best or a trial number"):
        pick_trial(study, "middle")


def test_hypervolume_of_a_staircase_in_the_study_units():
    from autopeft.pareto import hypervolume

    # metric maximised from 0.4, trainable fraction minimised up to 0.005
    points = [[0.6, 0.001], [0.7, 0.003], [0.5, 0.004]]  # the last is dominated
    expected = (0.6 - 0.4) * (0.003 - 0.001) + (0.7 - 0.4) * (0.005 - 0.003)
    assert hypervolume(points, [True, False], [0.4, 0.005]) == pytest.approx(expected)
    assert hypervolume([[0.3, 0.001], [0.9, 0.006]], [True, False], [0.4, 0.005]) == 0.0
    assert hypervolume([], [True, False], [0.4, 0.005]) == 0.0
