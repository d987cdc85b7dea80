"""Binding a spec: a study continues only with the settings it was created with; its exact objectives have one
formula."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import optuna
import pytest
from helpers import make_spec, respec

from autopeft.cli import main
from autopeft.errors import AutopeftError
from autopeft.study import bind, open_study, study_settings, write_settings

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture()
def spec(tiny_model, tmp_path):
    return make_spec(task="rte", budget="2%", model=tiny_model, data_dir=None, runs_dir=str(tmp_path), study="s")


def test_the_same_settings_continue_the_study_and_trials_workers_sampler_may_change(spec):
    first = open_study(spec)
    again = open_study(respec(spec, trials=50, workers=1, sampler="random", seed=3))
    assert again.study._study_id == first.study._study_id


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"budget": "1%"}, "--budget ("),
        ({"objectives": "metric,params,sparsity"}, "--objectives"),
        ({"space": "lora"}, "--space"),
        ({"task": "mrpc"}, "--task"),
        ({"epochs": 2.0}, "the training settings (epochs)"),
    ],
)
def test_other_settings_stop_with_one_line_naming_what_differs(spec, change, named):
    open_study(spec)
    with pytest.raises(AutopeftError) as info:
        open_study(respec(spec, **change))
    message = str(info.value)
    assert "\n" not in message and named in message and "--study NEW_NAME" in message


def test_another_model_is_named(spec, tmp_path):
    import shutil

    other = tmp_path / "other-model"
    shutil.copytree(spec.what.model, other)
    open_study(spec)
    with pytest.raises(AutopeftError, match="--model"):
        open_study(respec(spec, model=str(other)))


def test_the_cli_says_it_in_one_line_with_exit_2(spec, data_dir, capsys):
    open_study(respec(spec, data_dir=data_dir))
    args = ["search", "--task", "rte", "--budget", "1%", "--model", spec.what.model, "--data-dir", data_dir]
    status = main([*args, "--runs-dir", spec.where.runs_dir, "--study", "s", "--trials", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "exists with other settings" in err[0], err


def test_stored_exact_values_are_the_known_objectives(spec):
    bound = open_study(respec(spec, objectives="metric,params,sparsity", space="full"))
    known = bound.known_objectives()
    assert set(known) == {1, 2}
    assert known[1].worst == bound.limit / bound.info.backbone_params and known[2].worst == 0.0
    import numpy as np

    rng = np.random.default_rng(0)
    for _ in range(10):
        params = bound.space.repair(bound.space.sample(rng), bound.limit)
        config = bound.space.decode(params)
        exact = bound.exact_values(config)
        assert known[1].value(params) == exact["params"] == bound.space.count(config) / bound.info.backbone_params
        assert known[2].value(params) == exact["sparsity"] == bound.space.target_sparsity(config)
        values = bound.objective_values(config, {"metric": 0.5, "metrics": {}})
        assert values == [0.5, exact["params"], exact["sparsity"]]


@pytest.mark.slow
def test_a_worker_that_loads_a_study_being_created_waits_for_the_creators_settings(spec, postgres_url):
    # The moment of the race on a server store: the creator has made the study, not yet its settings.
    creator = respec(spec, storage=postgres_url, study="race", seed=1)
    binding = bind(creator)
    directions = [o.direction for o in binding.objectives]
    study = optuna.create_study(study_name="race", storage=postgres_url, directions=directions)
    with ThreadPoolExecutor(1) as pool:
        joining = pool.submit(open_study, respec(creator, seed=2))
        time.sleep(2.0)
        assert not joining.done(), "a worker must not adopt a study whose creator is still writing it"
        write_settings(study, creator, study_settings(creator, binding), binding.limit, binding.info)
        joined = joining.result(timeout=60)
    assert joined.selection_seed == 1  # the creator's: every worker holds out the same selection part
    assert open_study(respec(creator, seed=3)).selection_seed == 1  # a later worker loads at once
