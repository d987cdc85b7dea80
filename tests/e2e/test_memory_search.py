"""A search with training memory as a third objective and a memory budget, on the real path."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from helpers import autopeft, tiny_search_args, trials_of

pytestmark = pytest.mark.slow
DONE_STATES = ("COMPLETE", "PRUNED")


def test_a_memory_search_stores_the_prediction_the_sampler_assumes_keeps_the_measurement_and_respects_the_budget(
    tmp_path, tiny_model, tiny_info, data_dir
):
    from autopeft.space import SearchSpace
    from autopeft.training.memory import GIB, MemoryShape
    from autopeft.training.proxy import ProxySettings, memory_model

    shape = MemoryShape(4, 32)
    model = memory_model(tiny_model, 2, ProxySettings(), shape, str(tmp_path / "cache" / "memory"))
    space = SearchSpace.load("default", tiny_info)
    rng = np.random.default_rng(0)
    configs = [c for c in (space.decode(space.sample(rng)) for _ in range(300)) if c is not None]
    predicted = sorted(model.predict(c, tiny_info, space.count(c)) for c in configs)
    budget = predicted[len(predicted) // 2]  # half the space is over it: the cap binds
    args = tiny_search_args(tiny_model, data_dir, tmp_path, "mem", 6, "--workers", "2")
    extra = ["--objectives", "neg_loss,params,memory", "--memory-budget", str(budget), "--memory-shape", "4x32"]
    done = autopeft(*args, *extra)
    assert done.returncode == 0, done.stderr[-3000:]

    from autopeft.study import StudyView, open_study

    storage = f"sqlite:///{tmp_path}/optuna.db"
    bound = open_study(StudyView.load("mem", storage).spec)
    assert bound.memory == model  # the search read the calibration cached in its runs folder
    known = bound.known_objectives()
    finished = [t for t in trials_of("mem", storage) if t.state.name in DONE_STATES]
    assert len(finished) == 6 and len(bound.study.directions) == 3
    for trial in finished:
        values = trial.values or trial.user_attrs["values_at_stop"]
        assert known[2].value(trial.params) == values[2] == trial.user_attrs["predicted_memory_gib"]
        assert values[2] * GIB <= budget
        assert 0 < trial.user_attrs["measured_memory_gib"] < 2 * values[2]
    pareto = json.loads(autopeft("pareto", "--runs-dir", str(tmp_path), "--json").stdout)
    assert pareto and all(
        p["predicted_memory_gib"] > 0 and p["measured_memory_gib"] > 0 for p in pareto
    )  # with the status quo
    assert any(p["trial"] == "status_quo" for p in pareto)
    shown = autopeft("pareto", "--runs-dir", str(tmp_path), env={**os.environ, "COLUMNS": "250"})
    assert "memory GiB (predicted / measured)" in shown.stdout


def test_a_memory_budget_below_what_any_configuration_needs_is_refused_in_one_line(tmp_path, tiny_model, data_dir):
    args = tiny_search_args(tiny_model, data_dir, tmp_path, "tight", 2)
    done = autopeft(*args, "--memory-budget", "1MiB", "--memory-shape", "4x32")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "--memory-budget 0.00 GiB is below what every configuration needs at 4x32" in done.stderr


def test_a_malformed_memory_budget_is_refused_in_one_line(tmp_path, tiny_model, data_dir):
    done = autopeft(*tiny_search_args(tiny_model, data_dir, tmp_path, "bad", 2), "--memory-budget", "6XB")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "expected a positive size such as 6GiB" in done.stderr
