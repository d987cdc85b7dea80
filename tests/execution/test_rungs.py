"""The successive-halving policy: fronts, grace, the 1-D case, and the first rung that must learn."""

from __future__ import annotations

import math

import pytest

from autopeft.errors import AutopeftError
from autopeft.execution import RungBoard, should_stop
from autopeft.execution.rungs import front_ranks
from autopeft.study import StudySpec, SuccessiveHalving

PRIOR = -0.693


def test_fronts_follow_clear_domination_a_higher_score_with_no_more_params():
    points = [(0.6, 1000), (0.7, 1000), (0.65, 10), (0.6, 500), (0.9, 2000), (0.5, 10), (0.6, 1000)]
    assert front_ranks(points) == [1, 0, 0, 1, 0, 1, 1]  # equal scores never dominate each other


def test_a_trial_behind_a_full_top_front_stops_even_with_one_dominator():
    policy = SuccessiveHalving(grace=2, reduction=3)
    front = [(0.9, 100), (0.8, 50), (0.7, 10)]  # a Pareto front of three: the top third of nine
    others = [(0.1, 5000)] * 5
    assert should_stop(policy, 0.85, 150, front + others)  # dominated by (0.9, 100) alone, behind three
    assert not should_stop(policy, 0.95, 150, front + others)  # joins the front
    assert not should_stop(policy, 0.6, 5, front + others)  # the cheap end survives


def test_nothing_stops_before_the_rung_has_seen_grace_entries():
    policy = SuccessiveHalving(grace=4, reduction=3)
    worse = [(0.9, 10)] * 2
    assert not should_stop(policy, 0.1, 1000, worse)  # 3 entries seen < 4
    assert should_stop(policy, 0.1, 1000, worse + [(0.9, 10)])


@pytest.mark.parametrize("rank", range(9))
def test_with_equal_params_it_is_successive_halving_keeping_the_top_third(rank):
    policy = SuccessiveHalving(grace=2, reduction=3)
    scores = [0.9 - 0.05 * i for i in range(9)]
    peers = [(m, 100) for i, m in enumerate(scores) if i != rank]
    assert should_stop(policy, scores[rank], 100, peers) == (rank >= 3)


def test_a_smaller_trial_is_never_stopped_by_larger_better_ones():
    policy = SuccessiveHalving(grace=2, reduction=3)
    bigger_and_better = [(0.9, 10_000)] * 10
    assert not should_stop(policy, 0.5, 100, bigger_and_better)
    assert should_stop(policy, 0.5, 20_000, bigger_and_better)


def test_a_non_finite_score_stops_after_the_grace():
    policy = SuccessiveHalving(grace=2)
    assert should_stop(policy, math.nan, 10, [(0.5, 10)])
    assert not should_stop(policy, math.nan, 10, [])


def test_the_board_uses_the_history_and_sends_the_promoted_on_up_the_ladder():
    policy = SuccessiveHalving(first=1 / 9, grace=3, reduction=2)
    board = RungBoard(policy, first_rung=1 / 9, history={0: {0: (0.8, 100, 0.0), 1: (0.7, 100, 0.0)}})
    assert board.decide(2, 1 / 9, 0.6, 0.0, 100).next_fraction is None  # two of three rank ahead of it
    promoted = board.decide(3, 1 / 9, 0.9, 0.0, 100)
    assert promoted.next_fraction == pytest.approx(2 / 9) and promoted.level == 0
    assert board.decide("status_quo", 1 / 9, -1.0, 0.0, 10**6, keep=True).next_fraction == pytest.approx(2 / 9)


def test_a_first_rung_that_learns_after_one_raise_stops_raising():
    board = RungBoard(SuccessiveHalving(first=1 / 9, cap=1 / 3, grace=2), prior=PRIOR)
    raised = board.decide(0, 1 / 9, PRIOR, PRIOR + 0.001, 100)  # at the prior: nothing learnt at 1/9
    assert raised.next_fraction == pytest.approx(2 / 9) and raised.level is None and "raised" in raised.event
    behind = board.decide(1, 1 / 9, -0.5, -0.5, 100)  # scored at the old first rung: on to the new one, unranked
    assert behind.next_fraction == pytest.approx(2 / 9) and behind.level is None
    settled = board.decide(0, 2 / 9, -0.5, -0.5, 100)  # learnt at 2/9: settled there
    assert settled.settled and settled.first_rung == pytest.approx(2 / 9) and settled.level == 0
    assert "settled at 2/9" in settled.event and settled.next_fraction == pytest.approx(2 / 3)
    later = board.decide(1, 2 / 9, PRIOR, PRIOR, 100)  # a trial at the prior no longer raises anything
    assert later.level == 0 and later.event is None and board.first_rung() == pytest.approx(2 / 9)


def test_a_later_rung_ranks_nobody_until_an_entry_has_learnt_there():
    """Above the first rung, an entry that would stop at a rung where nothing has learnt goes on unranked."""
    policy = SuccessiveHalving(first=1 / 9, reduction=3, grace=2)
    board = RungBoard(
        policy, prior=PRIOR, first_rung=1 / 9, history={1: {0: (-0.5, 100, PRIOR), 1: (-0.6, 100, PRIOR)}}
    )
    spared = board.decide(2, 1 / 3, -0.9, PRIOR, 100)  # behind two of three, and nothing at 1/3 has learnt
    assert spared.next_fraction == pytest.approx(1.0) and spared.level == 1
    assert "trial 2 goes on past rung 1/3 unranked" in spared.event and spared.event in board.events
    assert board.decide("status_quo", 1 / 3, -0.3, -0.3, 10**6, keep=True).level == 1  # the status quo learnt there
    stopped = board.decide(3, 1 / 3, -0.9, PRIOR, 100)  # the same score now ranks, and stops
    assert stopped.next_fraction is None and stopped.event is None


def test_a_rung_learnt_in_the_stored_history_ranks_at_once_and_the_first_rung_always_ranks():
    policy = SuccessiveHalving(first=1 / 9, reduction=3, grace=2)
    learnt_before = RungBoard(policy, prior=PRIOR, first_rung=1 / 9, history={1: {0: (-0.5, 100, -0.4)}})
    assert learnt_before.decide(1, 1 / 3, -0.9, PRIOR, 100).next_fraction is None
    first = RungBoard(policy, prior=PRIOR, first_rung=1 / 9, history={0: {0: (-0.5, 100, PRIOR)}})
    assert first.decide(1, 1 / 9, -0.9, PRIOR, 100).next_fraction is None  # the first rung's own rule: its cap
    unknown = RungBoard(policy, prior=None, first_rung=1 / 9, history={1: {0: (0.5, 100, PRIOR)}})
    assert unknown.decide(1, 1 / 3, 0.1, PRIOR, 100).next_fraction is None  # no prior known: everything has learnt


def test_a_first_rung_that_never_learns_stops_at_its_cap_and_says_so():
    board = RungBoard(SuccessiveHalving(first=1 / 9, cap=1 / 3, grace=2), prior=PRIOR)
    events = [board.decide(0, f, PRIOR, PRIOR, 100).event for f in (1 / 9, 2 / 9, 1 / 3)]
    assert board.state() == (pytest.approx(1 / 3), True)
    assert "left at its cap 1/3" in events[-1] and "without learning the task" in events[-1]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"reduction": 1.0}, "--reduction must be > 1"),
        ({"first": 0.0}, "--first-rung must be a fraction in (0, 1)"),
        ({"first": 1.0}, "--first-rung must be a fraction in (0, 1)"),
        ({"first": 0.5, "cap": 0.25}, "--first-rung-cap must lie in"),
        ({"score": "nope"}, "--rung-score: Input should be 'neg_loss' or 'metric'"),
        ({"grace": 1}, "--grace must be at least 2"),
    ],
)
def test_invalid_policies_are_one_line_errors(kwargs, message):
    with pytest.raises(AutopeftError, match=message.replace("(", r"\(").replace(")", r"\)")):
        StudySpec.from_dict({"what": {"task": "rte", "budget": "1%", "rungs": kwargs}})


def test_fractions_parse_in_spec_files_and_on_the_command_line():
    spec = StudySpec.from_dict({"task": "rte", "budget": "1%", "first-rung": "1/9", "first-rung-cap": 0.25})
    assert spec.what.rungs.first == pytest.approx(1 / 9) and spec.what.rungs.cap == 0.25
    with pytest.raises(AutopeftError, match="'1/0' is not a fraction"):
        StudySpec.from_dict({"task": "rte", "budget": "1%", "first-rung": "1/0"})
    with pytest.raises(AutopeftError, match="one fraction"):
        StudySpec.from_dict({"task": "rte", "budget": "1%", "first-rung": "1/9,1/3"})
