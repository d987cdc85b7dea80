"""The multi-objective successive-halving policy: fronts, grace, the 1-D ASHA special case."""

from __future__ import annotations

import math

import pytest

from autopeft.errors import AutopeftError
from autopeft.execution import RungBoard, should_stop
from autopeft.execution.early_stopping import front_ranks
from autopeft.study import EarlyStopping, parse_fractions


def test_fronts_follow_clear_domination_a_higher_metric_with_no_more_params():
    points = [(0.6, 1000), (0.7, 1000), (0.65, 10), (0.6, 500), (0.9, 2000), (0.5, 10), (0.6, 1000)]
    assert front_ranks(points) == [1, 0, 0, 1, 0, 1, 1]  # equal metrics never dominate each other


def test_a_trial_behind_a_full_top_front_stops_even_with_one_dominator():
    policy = EarlyStopping(grace=2, reduction=3)
    front = [(0.9, 100), (0.8, 50), (0.7, 10)]  # a Pareto front of three: the top third of nine
    others = [(0.1, 5000)] * 5
    assert should_stop(policy, 0.85, 150, front + others)  # dominated by (0.9, 100) alone, behind three
    assert not should_stop(policy, 0.95, 150, front + others)  # joins the front
    assert not should_stop(policy, 0.6, 5, front + others)  # the cheap end survives


def test_nothing_stops_before_the_rung_has_seen_grace_trials():
    policy = EarlyStopping(grace=4, reduction=3)
    worse = [(0.9, 10)] * 2
    assert not should_stop(policy, 0.1, 1000, worse)  # 3 trials seen < 4
    assert should_stop(policy, 0.1, 1000, worse + [(0.9, 10)])


@pytest.mark.parametrize("rank", range(9))
def test_with_equal_params_it_is_successive_halving_keeping_the_top_third(rank):
    policy = EarlyStopping(grace=2, reduction=3)
    metrics = [0.9 - 0.05 * i for i in range(9)]
    peers = [(m, 100) for i, m in enumerate(metrics) if i != rank]
    assert should_stop(policy, metrics[rank], 100, peers) == (rank >= 3)


def test_a_smaller_trial_is_never_stopped_by_larger_better_ones():
    policy = EarlyStopping(grace=2, reduction=3)
    bigger_and_better = [(0.9, 10_000)] * 10
    assert not should_stop(policy, 0.5, 100, bigger_and_better)
    assert should_stop(policy, 0.5, 20_000, bigger_and_better)


def test_a_non_finite_metric_stops_after_the_grace():
    policy = EarlyStopping(grace=2)
    assert should_stop(policy, math.nan, 10, [(0.5, 10)])
    assert not should_stop(policy, math.nan, 10, [])


def test_the_board_records_every_trial_and_uses_the_history():
    board = RungBoard(EarlyStopping(grace=3, reduction=2), history={0: {0: (0.8, 100), 1: (0.7, 100)}})
    assert board.decide(2, 0, 0.6, 100)  # two of three rank ahead of it
    assert not board.decide(3, 0, 0.9, 100)
    assert not board.decide(4, 1, 0.1, 100)  # rung 1 has seen one trial: within the grace
    assert set(board.rungs[0]) == {0, 1, 2, 3}
    assert board.rungs[1] == {4: (0.1, 100)}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rungs": (0.5, 0.3)}, "increasing fractions"),
        ({"rungs": (0.0, 0.5)}, "increasing fractions"),
        ({"rungs": (0.5, 1.0)}, "increasing fractions"),
        ({"rungs": ()}, "increasing fractions"),
        ({"reduction": 1.0}, "reduction must be > 1"),
        ({"grace": 1}, "grace must be at least 2"),
        ({"score": "accuracy"}, "score must be one of neg_loss, train_loss, metric"),
    ],
)
def test_invalid_policies_are_refused(kwargs, message):
    with pytest.raises(AutopeftError, match=message):
        EarlyStopping(**kwargs)


def test_rungs_are_read_as_fractions_or_decimals():
    assert parse_fractions("1/8, 0.25,1/2", "--rungs") == (0.125, 0.25, 0.5)
    assert parse_fractions(None, "--rungs") is None
    with pytest.raises(AutopeftError, match="--rungs: '1/0' is not a fraction"):
        parse_fractions("1/4,1/0", "--rungs")
