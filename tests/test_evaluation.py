"""Seeded runs of a fixed configuration: reproducible per seed, failures recorded, input errors raised."""

from __future__ import annotations

import pytest

from autopeft.errors import DataError
from autopeft.evaluation import RunPlan, settings_key, train_seeds
from autopeft.methods.build import check_config
from autopeft.methods.config import TrialConfig
from autopeft.results import summarize
from autopeft.training import ProxySettings

SETTINGS = ProxySettings(epochs=1, max_train_samples=32, max_eval_samples=32, batch_size=8, max_length=64)


def lora(learning_rate: float, info) -> TrialConfig:
    config = TrialConfig({"lora": {"targets": [[0, "query", 2], [1, "value", 2]]}}, {"learning_rate": learning_rate})
    return check_config(config, info)


def test_summary_is_mean_and_sample_std_of_the_successful_runs():
    runs = [{"metric": 0.5, "metrics": {"accuracy": 0.5}}, {"metric": 0.7, "metrics": {"accuracy": 0.7}}]
    summary = summarize([*runs, {"seed": 3, "fail_reason": "boom"}])
    assert summary.mean == pytest.approx(0.6) and summary.std == pytest.approx(0.1414, abs=1e-4)
    assert summary.seeds == 2 and summary.metrics == {"accuracy": pytest.approx(0.6)}
    assert summarize(runs[:1]).std == 0.0
    assert settings_key(SETTINGS) == "e1-32-b8-l64"


def test_each_seed_is_one_reproducible_run(tiny_model, tiny_info, data_dir, tmp_path):
    plan = RunPlan(tiny_model, "rte", data_dir, SETTINGS, str(tmp_path / "cache"))
    seen = []
    runs = train_seeds(lora(2e-3, tiny_info), plan, [0, 0, 1], lambda seed, result: seen.append(seed))
    assert seen == [0, 0, 1] and [r["seed"] for r in runs] == [0, 0, 1]
    assert runs[0]["metric"] == runs[1]["metric"] and runs[0]["final_loss"] == runs[1]["final_loss"]
    assert runs[0]["final_loss"] != runs[2]["final_loss"]  # another seed: other examples, order, initialisation


def test_diverging_runs_are_recorded_and_the_other_seeds_still_run(tiny_model, tiny_info, data_dir, tmp_path):
    plan = RunPlan(tiny_model, "rte", data_dir, SETTINGS, str(tmp_path / "cache"))
    runs = train_seeds(lora(1e30, tiny_info), plan, [0, 1])
    assert [r["seed"] for r in runs] == [0, 1]
    assert all("non-finite loss" in r["fail_reason"] for r in runs)


def test_a_data_problem_is_raised_once_not_recorded_per_seed(tiny_model, tiny_info, tmp_path):
    task = tmp_path / "t.yaml"
    task.write_text(
        "name: t\ntrain: a.jsonl\nvalidation: b.jsonl\ntext_fields: [x]\nlabel_field: y\nlabels: [0, 1]\nmetric: accuracy\n"
    )
    (tmp_path / "b.jsonl").write_text('{"x": "a text", "y": 0}\n')
    plan = RunPlan(tiny_model, str(task), None, SETTINGS, str(tmp_path / "cache"))
    with pytest.raises(DataError, match="t.yaml: train: file .*a.jsonl' does not exist"):
        train_seeds(lora(1e-3, tiny_info), plan, [0, 1])


def test_trainings_outside_a_search_take_omp_num_threads_when_set_and_every_usable_core_otherwise(monkeypatch):
    import os

    from autopeft.evaluation import training_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert training_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    assert training_threads() == len(os.sched_getaffinity(0))
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert training_threads() == len(os.sched_getaffinity(0))
