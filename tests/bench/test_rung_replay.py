"""The rung replay runs the search's own rung board on what committed searches stored: with the search's rule it
must stop exactly the entries the search stopped, and a stricter rule must never train more."""

from __future__ import annotations

import pytest
from conftest import REPO
from rung_replay import report

STORES = REPO / "bench" / "results" / "stores" / "full-fidelity"
SEARCHES = [("mrpc", "quality-mrpc"), ("mrpc", "quality-mrpc-seed1"), ("rte", "quality-rte")]


@pytest.mark.parametrize(("task", "study"), SEARCHES)
def test_the_search_rule_replayed_on_its_records_stops_what_the_search_stopped(task, study):
    found = report(STORES / task, study)
    assert found["matches"]
    assert found["same"]["as searched"] == (True, True)


@pytest.mark.parametrize(("task", "study"), SEARCHES)
def test_fewer_trials_or_a_stricter_cut_never_trains_more(task, study):
    compute = report(STORES / task, study)["compute"]
    searched = compute["as searched"]
    assert compute["12 trials"] < searched
    assert compute["8 trials"] < compute["12 trials"]
    assert compute["reduction 6"] <= compute["reduction 4"] <= searched
