"""A study continues only with the settings it was created with; its exact objectives have one formula."""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor

import optuna
import pytest

from autopeft.cli import main
from autopeft.errors import AutopeftError
from autopeft.study import StudySpec, bind, open_study, study_settings, write_settings
from autopeft.training import ProxySettings

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture()
def spec(tiny_model, tmp_path):
    return StudySpec(task="rte", budget="2%", model=tiny_model, data_dir=None, runs_dir=str(tmp_path), study_name="s")


def test_the_same_settings_continue_the_study_and_trials_workers_sampler_may_change(spec):
    first = open_study(spec)
    again = open_study(dataclasses.replace(spec, trials=50, workers=1, sampler="random", seed=3))
    assert again.study._study_id == first.study._study_id


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"budget": "1%"}, "the budget (its parameter limit)"),
        ({"objectives": "metric,params,sparsity"}, "the objectives"),
        ({"space": "lora"}, "the search space file's text"),
        ({"task": "mrpc"}, "the task"),
        ({"proxy": ProxySettings(epochs=2.0)}, "the proxy training settings (epochs)"),
    ],
)
def test_other_settings_stop_with_one_line_naming_what_differs(spec, change, named):
    open_study(spec)
    with pytest.raises(AutopeftError) as info:
        open_study(dataclasses.replace(spec, **change))
    message = str(info.value)
    assert "\n" not in message and named in message and "--study NEW_NAME" in message


def test_another_model_is_named(spec, tmp_path):
    import shutil

    other = tmp_path / "other-model"
    shutil.copytree(spec.model, other)
    open_study(spec)
    with pytest.raises(AutopeftError, match="the model"):
        open_study(dataclasses.replace(spec, model=str(other)))


def test_the_cli_says_it_in_one_line_with_exit_2(spec, data_dir, capsys):
    open_study(dataclasses.replace(spec, data_dir=data_dir))
    args = ["search", "--task", "rte", "--budget", "1%", "--model", spec.model, "--data-dir", data_dir]
    status = main([*args, "--runs-dir", spec.runs_dir, "--study", "s", "--trials", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "exists with other settings" in err[0], err


def test_stored_exact_values_are_the_known_objectives(spec):
    bound = open_study(dataclasses.replace(spec, objectives="metric,params,sparsity", space="full"))
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
    creator = dataclasses.replace(spec, storage=postgres_url, study_name="race", seed=1)
    binding = bind(creator)
    directions = [o.direction for o in binding.objectives]
    study = optuna.create_study(study_name="race", storage=postgres_url, directions=directions)
    with ThreadPoolExecutor(1) as pool:
        joining = pool.submit(open_study, dataclasses.replace(creator, seed=2))
        time.sleep(2.0)
        assert not joining.done(), "a worker must not adopt a study whose creator is still writing it"
        write_settings(study, creator, study_settings(creator, binding), binding.limit, binding.info)
        joined = joining.result(timeout=60)
    assert joined.selection_seed == 1  # the creator's: every worker holds out the same selection part
    assert open_study(dataclasses.replace(creator, seed=3)).selection_seed == 1  # a later worker loads at once
