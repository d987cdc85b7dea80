"""What a confirmation run stores: its values, or its reason when it failed; a search with no finished trial owes
none."""

from __future__ import annotations

import math

import optuna
import pytest
from helpers import make_spec

from autopeft.execution.confirmations import ConfirmationRun, Confirmations
from autopeft.results import STATUS_QUO_KEY
from autopeft.study import StudyView, open_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture()
def confirmations(tiny_model, tmp_path):
    spec = make_spec(task="rte", budget="2%", model=tiny_model, data_dir=None, runs_dir=str(tmp_path), study="c")
    bound = open_study(spec)
    seen: list[tuple] = []
    return Confirmations(bound, lambda number, config: None, 4, 2, lambda key, run: seen.append((key, run))), seen


def a_result(**changes) -> dict:
    result = {"metric": 0.6, "metrics": {"accuracy": 0.6, "neg_loss": -0.65}, "neg_loss": -0.65, "train_seconds": 2.0}
    return {**result, "seconds": 2.5, "threads": 1, "train_tokens": 1000, **changes}


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        (None, "the worker process running it died"),
        ({"failed": True, "fail_reason": "RuntimeError: out of memory"}, "RuntimeError: out of memory"),
        (a_result(metric=math.nan), "non-finite objective values"),
    ],
)
def test_a_failed_run_is_stored_with_its_reason_and_no_values(confirmations, result, reason):
    confirmations, seen = confirmations
    bound = confirmations.bound
    run = ConfirmationRun(STATUS_QUO_KEY, bound.status_quo.config, 7, None)
    stored = confirmations.record(run, result)
    assert "values" not in stored and stored["fail_reason"].startswith(reason) and stored["seed"] == 7
    assert StudyView(bound.study).confirmations[STATUS_QUO_KEY] == [stored]
    assert seen == [(STATUS_QUO_KEY, stored)] and confirmations.made == [{"trial": STATUS_QUO_KEY, **stored}]


def test_a_run_is_stored_with_the_studys_objective_values_and_its_cost(confirmations):
    confirmations, _ = confirmations
    bound = confirmations.bound
    config = bound.status_quo.config
    stored = confirmations.record(ConfirmationRun(STATUS_QUO_KEY, config, 7, None), a_result())
    assert stored["values"] == bound.objective_values(config, a_result()) and stored["metric"] == 0.6
    assert (stored["train_seconds"], stored["threads"], stored["train_tokens"]) == (2.0, 1, 1000)
    again = confirmations.record(ConfirmationRun(STATUS_QUO_KEY, config, 8, None), a_result(metric=0.7))
    assert StudyView(bound.study).confirmations[STATUS_QUO_KEY] == [stored, again]  # appended, in order


def test_a_study_without_finished_trials_owes_no_confirmation_and_marks_none_in_flight(confirmations):
    confirmations, _ = confirmations
    assert not confirmations.owed()
    assert confirmations.next_round() == []
    assert not confirmations.bound.study.user_attrs.get("autopeft.confirming")
