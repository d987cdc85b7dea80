"""Pruning: exact zeros in the frozen weights, every granularity, schedules, and the exact target."""

import copy

import numpy as np
import pytest
import torch

from autopeft.methods.build import apply_config, target_sparsity
from autopeft.methods.config import TrialConfig
from autopeft.methods.pruning import event_steps, schedule_fraction, target_zeros
from autopeft.models import load_model

MODULES = ["query", "key", "value", "attn_out", "ffn_in", "ffn_out"]
LORA = {"targets": [[0, "query", 2]], "alpha": 16.0, "dropout": 0.0}


def plan(**changes):
    base = {
        "target": 0.5, "granularity": "unstructured", "criterion": "magnitude", "schedule": "cubic",
        "start": 0.0, "end": 0.8, "events": 10, "layers": [0, 1, 2], "modules": MODULES,
    }  # fmt: skip
    return {**base, **changes}


def run_schedule(tiny_model, tiny_info, pruning, total_steps=20):
    """Build a LoRA + pruning model and drive its pruning hook through a training's steps (no updates)."""
    model = load_model(tiny_model, 2)
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = TrialConfig({"lora": LORA, "pruning": pruning}, {"learning_rate": 1e-3})
    adapted = apply_config(model, config, tiny_info, total_steps)
    (pruner,) = adapted.hooks
    pruner.on_train_begin()
    history = []
    for step in range(1, total_steps + 1):
        pruner.after_step(step)
        history.append(adapted.sparsity())
    return adapted, original, history, config


def test_unstructured_cubic_reaches_the_target_monotonically(tiny_model, tiny_info):
    adapted, original, history, config = run_schedule(tiny_model, tiny_info, plan())
    assert history == sorted(history) and history[0] < history[-1]
    assert history[-1] == pytest.approx(target_sparsity(config, tiny_info)) and history[-1] >= 0.49
    for linear in adapted.linears.values():
        assert (linear.weight == 0).float().mean() >= 0.49  # each pruned matrix, exact zeros
    # the weights that survive are the largest ones, untouched
    weight = adapted.linears[(1, "ffn_in")].weight
    kept = original["bert.encoder.layer.1.intermediate.dense.weight"]
    assert torch.equal(weight[weight != 0], kept[weight != 0])
    assert weight[weight != 0].abs().min() >= kept[weight == 0].abs().max()


def test_two_four_keeps_exactly_two_of_every_four(tiny_model, tiny_info):
    adapted, *_ = run_schedule(tiny_model, tiny_info, plan(granularity="2:4", schedule="one_shot"))
    for linear in adapted.linears.values():
        assert ((linear.weight.reshape(-1, 4) != 0).sum(1) == 2).all()
    assert adapted.sparsity() == pytest.approx(0.5)


@pytest.mark.parametrize(("granularity", "expected"), [("heads", 0.25), ("neurons", 0.25)])
def test_structured_pruning_removes_whole_heads_or_neurons(granularity, expected, tiny_model, tiny_info):
    adapted, *_, config = run_schedule(tiny_model, tiny_info, plan(granularity=granularity, schedule="linear"))
    assert adapted.sparsity() == pytest.approx(expected) == target_sparsity(config, tiny_info)
    for layer in range(3):
        if granularity == "heads":  # 2 heads of 16: one is gone from query/key/value rows and attn_out columns
            rows = adapted.linears[(layer, "query")].weight.reshape(2, 16, 32)
            dead = [h for h in range(2) if not rows[h].any()]
            assert len(dead) == 1
            for module in ("key", "value"):
                assert not adapted.linears[(layer, module)].weight.reshape(2, 16, 32)[dead[0]].any()
            assert not adapted.linears[(layer, "attn_out")].weight.reshape(32, 2, 16)[:, dead[0]].any()
        else:  # 32 of 64 neurons: rows of ffn_in and columns of ffn_out
            dead_rows = (adapted.linears[(layer, "ffn_in")].weight == 0).all(1)
            assert dead_rows.sum() == 32
            assert (adapted.linears[(layer, "ffn_out")].weight[:, dead_rows] == 0).all()


def test_schedules_and_their_pruning_steps():
    assert schedule_fraction("one_shot", 0.1, 0.2, 0.8) == 0 and schedule_fraction("one_shot", 0.2, 0.2, 0.8) == 1
    assert schedule_fraction("linear", 0.5, 0.0, 1.0) == pytest.approx(0.5)
    assert schedule_fraction("cubic", 0.5, 0.0, 1.0) == pytest.approx(1 - 0.5**3)  # Zhu & Gupta
    assert schedule_fraction("cubic", 0.9, 0.0, 0.8) == 1
    assert event_steps(plan(schedule="one_shot", start=0.25), 100) == [25]
    steps = event_steps(plan(start=0.2, end=0.6, events=4), 100)
    assert steps == [30, 40, 50, 60]


def test_target_is_exact_before_training(tiny_info):
    weights = sum(s.in_features * s.out_features for s in tiny_info.sites.values())
    assert target_zeros(plan(target=0.3), tiny_info) == sum(
        int(0.3 * s.in_features * s.out_features) for s in tiny_info.sites.values()
    )
    assert target_zeros(plan(granularity="2:4"), tiny_info) == weights // 2
    ffn_only = plan(modules=["ffn_in", "ffn_out"])
    assert target_zeros(ffn_only, tiny_info) / weights == pytest.approx(0.25)


@pytest.mark.parametrize("criterion", ["taylor", "movement", "flap", "pst"])
def test_data_aware_criteria_train_and_prune_to_the_target(criterion, tmp_path, tiny_model, data_dir):
    from autopeft.training import ProxyRequest, ProxySettings, run_proxy_trial

    config = {"methods": {"lora": LORA, "pruning": plan(criterion=criterion)}, "training": {"learning_rate": 1e-3}}
    settings = ProxySettings(epochs=1, max_train_samples=96, max_eval_samples=32, batch_size=16)
    masks = tmp_path / "masks.npz"
    request = ProxyRequest(
        tiny_model, "rte", data_dir, config, settings, cache_dir=str(tmp_path), masks_path=str(masks)
    )
    result = run_proxy_trial(request)
    assert result["sparsity"] == pytest.approx(result["target_sparsity"]) and result["sparsity"] >= 0.49
    with np.load(masks) as saved:
        assert len(saved.files) == 18 and all(saved[k].mean() == pytest.approx(0.5, abs=0.01) for k in saved.files)
    magnitude = copy.deepcopy(config)
    magnitude["methods"]["pruning"]["criterion"] = "magnitude"
    other = tmp_path / "magnitude.npz"
    run_proxy_trial(
        ProxyRequest(tiny_model, "rte", data_dir, magnitude, settings, cache_dir=str(tmp_path), masks_path=str(other))
    )
    with np.load(masks) as a, np.load(other) as b:
        assert any(not np.array_equal(a[k], b[k]) for k in a.files)  # the data changed the choice


def test_flap_prunes_the_inputs_that_do_not_fluctuate_first(tiny_model, tiny_info):
    """FLAP's score of a weight is its input feature's variance times its square: with equal weights, the columns
    fed by a constant input go first."""
    model = load_model(tiny_model, 2)
    config = TrialConfig({"lora": LORA, "pruning": plan(criterion="flap", schedule="one_shot", start=0.5,
                                                         layers=[0], modules=["ffn_out"], target=0.25)},
                         {"learning_rate": 1e-3})  # fmt: skip
    adapted = apply_config(model, config, tiny_info, total_steps=4)
    (pruner,) = adapted.hooks
    linear = pruner.linears[(0, "ffn_out")]
    with torch.no_grad():
        linear.weight.fill_(0.5)
    pruner.on_train_begin()
    steady = torch.arange(linear.in_features) < linear.in_features // 4  # the first quarter never changes
    for _ in range(3):
        x = torch.randn(8, 5, linear.in_features)
        x[..., steady] = 1.0
        linear.train()
        linear(x)
    pruner.after_step(pruner.events[-1])
    kept = linear.weight != 0
    assert not kept[:, steady].any() and kept[:, ~steady].all()
    assert not pruner._hooks  # the statistics stop at the last event


def test_pst_combines_magnitude_with_a_low_rank_movement_estimate(tiny_model, tiny_info):
    model = load_model(tiny_model, 2)
    config = TrialConfig({"lora": LORA, "pruning": plan(criterion="pst", layers=[0], modules=["query"])},
                         {"learning_rate": 1e-3})  # fmt: skip
    (pruner,) = apply_config(model, config, tiny_info, total_steps=10).hooks
    site = (0, "query")
    weight = pruner.linears[site].weight.detach()
    movement = torch.outer(torch.arange(weight.shape[0]).float(), torch.ones(weight.shape[1]))  # rank 1
    pruner.scores[site] = movement
    score = pruner._score(site)
    magnitude = weight.abs()
    expected = magnitude / magnitude.mean() + movement / movement.abs().mean()
    assert torch.allclose(score, expected, atol=1e-4)  # a rank-1 movement is its own best rank-8 estimate
