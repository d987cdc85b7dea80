"""The full space end to end: every method, pruning, the sparsity objective, ``trial``, export and load."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
from helpers import autopeft, mlflow_runs, tiny_search_args

import autopeft as autopeft_package

UNSTRUCTURED = """
methods:
  lora: {targets: [[0, query, 8], [3, value, 8]]}
  pruning: {target: 0.5, granularity: unstructured, criterion: magnitude, schedule: cubic, start: 0.0, end: 0.8,
            layers: [0, 1, 2, 3, 4, 5], modules: [query, key, value, attn_out, ffn_in, ffn_out]}
training: {learning_rate: 0.001}
"""

SEMI = {
    "methods": {
        "serial_adapter": {"targets": [[0, "ffn", 4]]},
        "pruning": {"target": 0.5, "granularity": "2:4", "schedule": "one_shot", "layers": [0, 1, 2], "modules": ["query", "ffn_in"]},
    },
    "training": {"learning_rate": 0.001},
}  # fmt: skip

QUICK = ["--max-train-samples", "64", "--max-eval-samples", "32", "--epochs", "1"]


@pytest.mark.slow
def test_trial_with_half_unstructured_cubic_pruning_on_the_default_model(tmp_path, data_dir):
    config = tmp_path / "cfg.yaml"
    config.write_text(UNSTRUCTURED)
    done = autopeft("trial", "--config", str(config), "--task", "rte", "--data-dir", data_dir, *QUICK, "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["sparsity"] >= 0.49 and result["target_sparsity"] == pytest.approx(0.5, abs=1e-4)
    assert result["trainable_params"] == 8 * (384 + 384) * 2
    assert set(result) >= {"metric", "metrics", "trainable_params", "trainable_fraction", "sparsity"}


def test_trial_exports_two_four_masks_that_load_reproduces(tmp_path, tiny_model, data_dir):
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(SEMI))
    out = tmp_path / "export"
    args = ["trial", "--config", str(config), "--task", "rte", "--model", tiny_model, "--data-dir", data_dir]
    done = autopeft(*args, *QUICK, "--json", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    with np.load(out / "masks.npz") as masks:
        assert sorted(masks.files)[0].endswith(".weight") and len(masks.files) == 6
        for key in masks.files:
            assert (masks[key].reshape(-1, 4).sum(1) == 2).all()
    meta = json.loads((out / "autopeft.json").read_text())
    assert not meta["peft_expressible"] and any("serial" in reason for reason in meta["not_expressible"])
    adapted = autopeft_package.load(out)
    assert adapted.sparsity() == pytest.approx(result["sparsity"])
    for linear in (adapted.linears[(layer, m)] for layer in range(3) for m in ("query", "ffn_in")):
        assert ((linear.weight.reshape(-1, 4) != 0).sum(1) == 2).all()
    assert adapted.trainable_params() == result["trainable_params"]


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        ({"dora": {}}, "methods.dora: unknown method; allowed: adalora, lora"),
        ({"lora": {"targets": [[0, "gate_proj", 2]]}}, "methods.lora.targets: 'gate_proj' is not a module"),
        ({"serial_adapter": {"targets": [[0, "ffn", 64]]}}, "methods.serial_adapter.targets: size 64 exceeds the hidden size 32"),
        ({"ia3": {"targets": [[0, "key"]]}, "pruning": {"target": 1.2, "layers": [0], "modules": ["key"]}}, "methods.pruning.target"),
        (
            {"ia3": {"targets": [[0, "key"]]}, "pruning": {"target": 0.5, "start": 0.7, "end": 0.2, "layers": [0], "modules": ["key"]}},
            "methods.pruning.end: the schedule ends (0.2) before or when it starts (0.7)",
        ),
    ],
)  # fmt: skip
def test_trial_rejects_bad_configurations_in_one_line(plan, expected, tmp_path, tiny_model, data_dir):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"methods": plan, "training": {"learning_rate": 0.001}}))
    done = autopeft("trial", "--config", str(config), "--task", "rte", "--model", tiny_model, "--data-dir", data_dir)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert str(config) in done.stderr and expected in done.stderr, done.stderr


@pytest.mark.slow
def test_full_space_search_with_the_sparsity_objective(tmp_path, tiny_model, data_dir):
    args = tiny_search_args(tiny_model, data_dir, tmp_path, "full", 8, "--workers", "2", "--space", "full")
    done = autopeft(*args, "--objectives", "metric,params,sparsity")
    assert done.returncode == 0, done.stderr[-3000:]
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.load_study(study_name="full", storage=storage)
    assert len(study.directions) == 3
    pareto = json.loads(autopeft("pareto", "--runs-dir", str(tmp_path), "--json").stdout)
    trials = json.loads(autopeft("trials", "--runs-dir", str(tmp_path), "--json").stdout)
    pareto = [p for p in pareto if p["trial"] != "status_quo"]  # shown beside the Pareto set, not in it
    assert pareto and len(trials) >= 8
    for entry in pareto + [t for t in trials if t["state"] == "COMPLETE"]:
        assert len(entry["objectives"]) == 3 and entry["objectives"][2] == entry["target_sparsity"]  # exact, as assumed
        assert entry["sparsity"] >= entry["target_sparsity"] - 1e-9
    assert any(t["sparsity"] > 0 for t in trials if t["state"] == "COMPLETE")
    runs, _ = mlflow_runs(f"sqlite:///{tmp_path}/mlflow.db", "full")
    tagged = {int(r.data.tags["autopeft.trial"]) for r in runs if r.data.tags.get("autopeft.pareto") == "true"}
    assert tagged == {p["trial"] for p in pareto}
    assert all("sparsity" in r.data.metrics and "target_sparsity" in r.data.metrics for r in runs)
    pruned = next(p for p in trials if p["state"] == "COMPLETE" and p["sparsity"] > 0)
    out = tmp_path / "export"
    done = autopeft("export", "--runs-dir", str(tmp_path), "--pick", str(pruned["trial"]), "--out", str(out))
    assert done.returncode == 0, done.stderr
    adapted = autopeft_package.load(out)
    assert adapted.sparsity() == pytest.approx(pruned["sparsity"])
    assert adapted.trainable_params() == pruned["trainable_params"]
