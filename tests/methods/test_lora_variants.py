"""LoRA's variants (DoRA, rsLoRA, initialisations, LoRA+): exact counts, peft round trips, unchanged start."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from autopeft.errors import ConfigError
from autopeft.methods.build import apply_config, check_config, count_trainable, peft_trainable_params
from autopeft.methods.config import TrialConfig
from autopeft.models import load_model
from autopeft.space import SearchSpace

PLAN = {"targets": [[0, "query", 2], [1, "value", 4], [2, "ffn_out", 4]], "alpha": 16.0, "dropout": 0.0}
KNOBS = [
    {"use_dora": True},
    {"use_rslora": True},
    {"init": "gaussian"},
    {"init": "pissa"},
    {"init": "olora"},
    {"init": "orthogonal"},
    {"loraplus_ratio": 16.0},
    {"use_dora": True, "use_rslora": True, "init": "pissa", "loraplus_ratio": 4.0},
]


def lora(tiny_info, **knobs) -> TrialConfig:
    return check_config(TrialConfig({"lora": {**PLAN, **knobs}}, {"learning_rate": 1e-3}), tiny_info)


def batch():
    torch.manual_seed(0)
    return {"input_ids": torch.randint(0, 1000, (2, 9)), "attention_mask": torch.ones(2, 9, dtype=torch.long)}


@pytest.mark.parametrize("knobs", KNOBS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_predicted_built_and_peft_counts_agree_and_the_start_is_the_backbone(knobs, tmp_path, tiny_model, tiny_info):
    from peft import PeftConfig, get_peft_model

    from autopeft.model_folder import write_export

    config = lora(tiny_info, **knobs)
    base = load_model(tiny_model, 2).eval()
    adapted = apply_config(copy.deepcopy(base), config, tiny_info)
    predicted = count_trainable(config, tiny_info)
    assert adapted.trainable_params() == predicted
    with torch.no_grad():  # every variant starts where the backbone is (PiSSA/OLoRA subtract what they move into B A)
        torch.testing.assert_close(adapted.model.eval()(**batch()).logits, base(**batch()).logits, atol=1e-5, rtol=0)

    write_export(tmp_path, config, tiny_info, {})
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["use_dora"] == knobs.get("use_dora", False) and saved["use_rslora"] == knobs.get("use_rslora", False)
    loaded = get_peft_model(load_model(tiny_model, 2), PeftConfig.from_pretrained(str(tmp_path)))
    assert peft_trainable_params(loaded) == predicted


def test_dora_adds_one_magnitude_per_output_feature(tiny_info):
    plain, dora = (count_trainable(lora(tiny_info, use_dora=on), tiny_info) for on in (False, True))
    assert dora - plain == sum(tiny_info.sites[(layer, module)].out_features for layer, module, _ in PLAN["targets"])


def test_loraplus_trains_b_faster_by_its_ratio(tiny_model, tiny_info):
    adapted = apply_config(load_model(tiny_model, 2), lora(tiny_info, loraplus_ratio=16.0), tiny_info)
    optimizer = adapted.optimizer(1e-3)
    named = {id(p): n for n, p in adapted.model.named_parameters()}
    rates = {named[id(p)]: g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert {lr for n, lr in rates.items() if "lora_A" in n} == {1e-3}
    assert [lr for n, lr in rates.items() if "lora_B" in n] == pytest.approx([16e-3] * len(PLAN["targets"]))
    assert set(rates) == {n for n, p in adapted.model.named_parameters() if p.requires_grad}
    plain = apply_config(load_model(tiny_model, 2), lora(tiny_info), tiny_info).optimizer(1e-3)
    assert [g["lr"] for g in plain.param_groups] == [1e-3]


def test_the_lora_plus_space_searches_every_knob(tiny_info):
    space = SearchSpace.load("lora_plus", tiny_info)
    for knob in ("use_dora", "use_rslora", "init", "loraplus_ratio"):
        assert f"lora.{knob}" in space.dimensions


def test_odd_ranks_with_the_orthogonal_initialisation_are_refused(tiny_info, tmp_path):
    with pytest.raises(ConfigError, match="orthogonal initialisation needs even ranks"):
        check_config(
            TrialConfig(
                {"lora": {**PLAN, "targets": [[0, "query", 3]], "init": "orthogonal"}}, {"learning_rate": 1e-3}
            ),
            tiny_info,
        )
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\nmethods:\n  lora:\n    modules: {choices: [query]}\n    rank: {choices: [1, 2]}\n"
        "    init: {choices: [default, orthogonal]}\n"
    )
    with pytest.raises(ConfigError, match=r"init: orthogonal initialisation needs even ranks .*rank.choices has \[1\]"):
        SearchSpace.load(str(path), tiny_info)
