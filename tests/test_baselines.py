"""Baselines: standard configurations sized to the budget, stored as a plain Optuna study, resumable."""

from __future__ import annotations

import pytest

from autopeft.baselines import BASELINES, baseline_points, open_baselines_study, run_baselines, stored_runs
from autopeft.evaluation import RunPlan
from autopeft.methods.build import apply_config, count_trainable
from autopeft.models import load_model
from autopeft.training import ProxySettings


def test_the_standard_baselines_are_registered_and_the_seed_methods_run_only_when_named():
    standard = [name for name, baseline in BASELINES.items() if baseline.standard]
    assert standard == ["lora", "houlsby", "pfeiffer", "prefix", "full"]
    assert [n for n in BASELINES if n not in standard] == [
        "side_tuning",
        "sparse_plus_lowrank",
        "incre_lora",
        "subspace",
    ]


@pytest.mark.parametrize("name", ["houlsby", "pfeiffer", "prefix"])
def test_sized_baselines_take_the_largest_size_within_the_limit(name, tiny_info):
    limit = 3000
    config = BASELINES[name].config(tiny_info, limit)
    ((method, plan),) = config.methods.items()
    count = count_trainable(config, tiny_info)
    assert count <= limit
    larger = {**plan, "targets": [[*t[:-1], t[-1] + 1] for t in plan["targets"]]}
    assert count_trainable(type(config)({method: larger}, config.training), tiny_info) > limit


def test_lora_keeps_rank_8_on_query_and_value_and_full_trains_everything(tiny_info):
    lora = BASELINES["lora"].config(tiny_info, 10)
    layers, hidden = tiny_info.num_layers, tiny_info.hidden_size
    assert count_trainable(lora, tiny_info) == layers * 2 * 8 * (hidden + hidden)
    assert count_trainable(BASELINES["full"].config(tiny_info, 10), tiny_info) == tiny_info.backbone_params


@pytest.mark.parametrize("name", list(BASELINES))
def test_every_baseline_builds_with_the_predicted_count(name, tiny_model, tiny_info):
    config = BASELINES[name].config(tiny_info, 3000)
    adapted = apply_config(load_model(tiny_model, 2), config, tiny_info)
    assert adapted.trainable_params() == count_trainable(config, tiny_info)


def test_runs_are_stored_per_seed_and_not_repeated(tmp_path, tiny_model, tiny_info, data_dir):
    study = open_baselines_study(f"sqlite:///{tmp_path}/optuna.db", "rte-tiny-2pct-baselines")
    settings = ProxySettings(epochs=1, max_train_samples=32, max_eval_samples=32, batch_size=8, max_length=64)
    plan = RunPlan(tiny_model, "rte", data_dir, settings, str(tmp_path / "cache"))
    results = run_baselines(study, ["pfeiffer", "full"], tiny_info, 3000, plan, [0, 1])
    assert [r.name for r in results] == ["pfeiffer", "full"] and [r.over_budget for r in results] == [False, True]
    assert all(r.summary.seeds == 2 for r in results)
    trials = stored_runs(study)
    assert sorted((t.user_attrs["baseline"], t.user_attrs["seed"]) for t in trials) == [
        ("full", 0), ("full", 1), ("pfeiffer", 0), ("pfeiffer", 1)
    ]  # fmt: skip
    assert all(t.values[1] == t.user_attrs["trainable_fraction"] for t in trials)
    again = run_baselines(study, ["pfeiffer"], tiny_info, 3000, plan, [0, 1, 2])
    assert len(stored_runs(study)) == 5 and again[0].summary.seeds == 3  # only seed 2 was new
    points = {p["baseline"]: p for p in baseline_points(study)}
    assert points["pfeiffer"]["seeds"] == 3 and points["full"]["trainable_fraction"] == 1.0
