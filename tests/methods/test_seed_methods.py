"""The seed methods autopeft implements itself: side tuning, sparse plus low-rank, growing ranks, random subspaces.

Each is checked on what it promises beyond the registry-driven tests (exact counts, unchanged output at
initialisation): it trains, it loads back through ``autopeft.load`` to the same logits, and its own invariant.
"""

from __future__ import annotations

import pytest
import torch
from test_model_folder import logits, record, trained

import autopeft
from autopeft.methods import METHODS
from autopeft.methods.build import apply_config, check_config
from autopeft.methods.config import TrialConfig
from autopeft.model_folder import save_trained
from autopeft.models import load_model

OWN = ("side_tuning", "sparse_plus_lowrank", "incre_lora", "subspace")


@pytest.mark.parametrize("name", OWN)
def test_a_trained_seed_method_loads_through_autopeft_to_the_same_logits(name, tmp_path, tiny_model, tiny_info):
    adapted = trained(tiny_model, tiny_info, {name: METHODS[name].example}, steps=6)
    untouched = load_model(tiny_model, 2)
    fresh = apply_config(load_model(tiny_model, 2), adapted.config, tiny_info, 6)
    fresh.model.load_state_dict({n: t for n, t in untouched.state_dict().items() if "classifier" in n}, strict=False)
    assert not torch.allclose(logits(fresh.model), logits(adapted.model), atol=1e-4)  # training moved it
    summary = save_trained(tmp_path / "m", adapted, tiny_info, record(), 6, None, untouched)
    assert not summary["peft_expressible"]
    loaded = autopeft.load(tmp_path / "m")
    assert torch.allclose(logits(loaded.model), logits(adapted.model), atol=1e-5)
    assert loaded.trainable_params() == adapted.trainable_params()


def test_side_tuning_sends_no_gradient_into_the_backbone(tiny_model, tiny_info):
    config = check_config(
        TrialConfig({"side_tuning": {"layers": [0, 1, 2], "width": 8}}, {"learning_rate": 1e-3}), tiny_info
    )
    adapted = apply_config(load_model(tiny_model, 2), config, tiny_info)
    model = adapted.model.train()
    outputs = []
    for layer in model.bert.encoder.layer:
        layer.register_forward_hook(
            lambda module, args, out: outputs.append(out[0] if isinstance(out, tuple) else out), prepend=True
        )
    ids = torch.randint(1000, 5000, (4, 10))
    model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 1, 0, 1])).loss.backward()
    assert len(outputs) == 3 and not any(o.requires_grad for o in outputs)  # autograd keeps none of the backbone
    side = [n for n, p in model.named_parameters() if "autopeft_side_tuning" in n]
    backbone = [n for n, p in model.named_parameters() if n.startswith("bert.") and "autopeft_side_tuning" not in n]
    named = dict(model.named_parameters())
    assert side and all(named[n].grad is not None for n in side)
    assert all(named[n].grad is None and not named[n].requires_grad for n in backbone)


def test_the_sparse_update_is_stored_as_values_and_positions_on_its_support(tiny_model, tiny_info):
    plan = {"targets": [[1, "ffn_in"]], "rank": 2, "density": 0.05, "support": "magnitude", "alpha": 16.0}
    adapted = trained(tiny_model, tiny_info, {"sparse_plus_lowrank": plan}, steps=3)
    (update,) = adapted.model.bert.autopeft_sparse_plus_lowrank.values()
    weight = adapted.linears[(1, "ffn_in")].weight
    nnz = round(0.05 * weight.numel())
    assert update.values.shape == (nnz,) and update.index.dtype == torch.int64 and update.index.shape == (nnz,)
    assert set(update.index.tolist()) == set(torch.topk(weight.abs().flatten(), nnz).indices.tolist())
    assert update.values.abs().sum() > 0  # trained
    random = check_config(
        TrialConfig({"sparse_plus_lowrank": {**plan, "support": "random"}}, {"learning_rate": 1e-3}), tiny_info
    )
    again = [apply_config(load_model(tiny_model, 2), random, tiny_info) for _ in range(2)]
    indices = [next(iter(a.model.bert.autopeft_sparse_plus_lowrank.values())).index for a in again]
    assert torch.equal(indices[0], indices[1])  # the random support is seeded


def test_growing_ranks_grow_by_importance_within_the_reserved_budget_and_report_them(tiny_model, tiny_info):
    plan = {"targets": [[0, "value"], [1, "query"], [2, "ffn_in"]], "max_rank": 4, "init_rank": 1, "grow": 1,
            "interval": 0.1, "until": 0.8, "alpha": 16.0}  # fmt: skip
    adapted = trained(tiny_model, tiny_info, {"incre_lora": plan}, steps=10)
    (hook,) = adapted.hooks
    ranks = hook.report()["incre_lora_ranks"]
    assert hook.growths == 8 and sum(ranks.values()) == 3 + 8  # one component at each growth (steps 1..8)
    assert all(1 <= r <= 4 for r in ranks.values()) and adapted.trainable_params() == 4 * (2 * (32 + 32) + (32 + 64))
    updates = adapted.model.bert.autopeft_incre_lora.values()
    assert all(u.mask.sum() == r for u, r in zip(updates, ranks.values(), strict=True))  # saved with the model
    masked = [u.lora_B[:, u.mask == 0] for u in updates]
    assert all(m.abs().sum() == 0 for m in masked)  # components not yet grown never trained


def test_a_random_subspace_trains_exactly_d_numbers_and_repeats_from_its_seed(tiny_model, tiny_info):
    plan = {"targets": [[0, "query"], [1, "ffn_out"]], "dim": 40, "scale": 1.0, "seed": 3}
    adapted = trained(tiny_model, tiny_info, {"subspace": plan}, steps=3)
    trainable = [n for n, p in adapted.model.named_parameters() if p.requires_grad and "classifier" not in n]
    assert trainable == ["bert.autopeft_subspace_theta"] and adapted.trainable_params() == 40
    updates = list(adapted.model.bert.autopeft_subspace.values())
    again = apply_config(load_model(tiny_model, 2), adapted.config, tiny_info)
    regenerated = list(again.model.bert.autopeft_subspace.values())
    assert all(torch.equal(a.permutation, b.permutation) for a, b in zip(updates, regenerated, strict=True))
    assert not torch.equal(updates[0].gaussian[:16], updates[1].gaussian[:16])  # each site its own projection
    assert updates[0].weight_delta().abs().sum() > 0


def test_a_trained_growing_rank_model_records_the_ranks_it_reached(tmp_path, tiny_model, data_dir):
    """The production path (run_proxy_trial): the ranks reached are in the result and in the kept folder's record."""
    import json

    from autopeft.training import ProxyRequest, ProxySettings, run_proxy_trial

    plan = {**METHODS["incre_lora"].example, "interval": 0.2, "until": 0.8}
    settings = ProxySettings(epochs=1, max_train_samples=80, max_eval_samples=16, batch_size=8, max_length=64)
    config = {"methods": {"incre_lora": plan}, "training": {"learning_rate": 5e-3}}
    request = ProxyRequest(tiny_model, "rte", data_dir, config, settings, seed=1, model_dir=str(tmp_path / "m"))
    result = run_proxy_trial(request)  # 10 steps: growths at steps 2, 4, 6 and 8
    ranks = result["method_report"]["incre_lora_ranks"]
    assert sum(ranks.values()) == 3 + 4 and result["method_report"]["incre_lora_growths"] == 4
    document = json.loads((tmp_path / "m" / "autopeft.json").read_text())
    assert document["trained"]["method_report"]["incre_lora_ranks"] == ranks
    loaded = autopeft.load(tmp_path / "m")
    assert sorted(int(u.mask.sum()) for u in loaded.model.bert.autopeft_incre_lora.values()) == sorted(ranks.values())
