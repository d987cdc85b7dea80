"""Every method and shipped space: exact counts, forward equivalence at initialisation, peft round trips."""

import copy

import numpy as np
import pytest
import torch

from autopeft.methods import METHODS
from autopeft.methods.build import apply_config, check_config, count_trainable, peft_config, peft_trainable_params
from autopeft.methods.config import TrialConfig
from autopeft.models import backbone_info, default_model, load_model
from autopeft.space import SPACES_DIR, SearchSpace

SHIPPED = sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))

PLANS = {name: method.example for name, method in METHODS.items()}
"""Every registered method's own example plan: a new method is tested without editing this file."""
MODULE_ADDING = [name for name, method in METHODS.items() if method.adds_modules]


def sampled_configs(space, n, seed=0):
    rng = np.random.default_rng(seed)
    configs = []
    while len(configs) < n:
        config = space.decode(space.sample(rng))
        if config is not None:
            configs.append(config)
    return configs


def inputs(padded: bool = True):
    torch.manual_seed(0)
    mask = torch.ones(2, 12, dtype=torch.long)
    if padded:
        mask[1, 7:] = 0
    return {"input_ids": torch.randint(0, 1000, (2, 12)), "attention_mask": mask}


def config_of(*names, **plans) -> TrialConfig:
    return TrialConfig({name: copy.deepcopy(PLANS[name]) for name in names} | plans, {"learning_rate": 1e-3})


@pytest.mark.parametrize("space_name", SHIPPED)
def test_predicted_count_equals_the_built_count_on_tiny_bert(space_name, tiny_model, tiny_info):
    space = SearchSpace.load(space_name, tiny_info)
    base = load_model(tiny_model, 2)
    for config in sampled_configs(space, 50):
        adapted = apply_config(copy.deepcopy(base), config, tiny_info, total_steps=10)
        assert adapted.trainable_params() == space.count(config), config.methods


@pytest.mark.slow
@pytest.mark.parametrize("space_name", SHIPPED)
def test_predicted_count_equals_the_built_count_on_the_default_model(space_name):
    info = backbone_info(default_model(), 2)
    assert (info.num_layers, info.hidden_size, info.backbone_params) == (6, 384, 22_713_216)
    space = SearchSpace.load(space_name, info)
    base = load_model(default_model(), 2)
    for config in sampled_configs(space, 50, seed=1):
        adapted = apply_config(copy.deepcopy(base), config, info, total_steps=10)
        assert adapted.trainable_params() == space.count(config), config.methods


def test_the_full_space_samples_every_method_it_names(tiny_info):
    space = SearchSpace.load("full", tiny_info)
    seen = {name for c in sampled_configs(space, 50) for name in c.methods}
    assert seen == set(space.sections)


COMBINED = ("lora", "ia3", "serial_adapter", "parallel_adapter")


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_counts_its_example_exactly(name, tiny_model, tiny_info):
    methods = {name: copy.deepcopy(PLANS[name])} | ({} if METHODS[name].adds_modules else {"ia3": PLANS["ia3"]})
    config = check_config(TrialConfig(methods, {"learning_rate": 1e-3}), tiny_info)
    adapted = apply_config(load_model(tiny_model, 2), config, tiny_info, total_steps=10)
    assert adapted.trainable_params() == count_trainable(config, tiny_info) > 0


@pytest.mark.parametrize(
    "names", [(n,) for n, m in METHODS.items() if m.identity_at_init and m.adds_modules] + [COMBINED]
)
def test_fresh_methods_leave_the_output_unchanged(names, tiny_model, tiny_info):
    base = load_model(tiny_model, 2).eval()
    adapted = apply_config(copy.deepcopy(base), config_of(*names), tiny_info)
    with torch.no_grad():
        torch.testing.assert_close(adapted.model.eval()(**inputs()).logits, base(**inputs()).logits)
    assert adapted.trainable_params() > 0


@pytest.mark.parametrize("reparameterize", [False, True])
def test_prefix_attends_to_its_tokens_and_keeps_padding_out(reparameterize, tiny_model, tiny_info):
    base = load_model(tiny_model, 2).eval()
    plan = {**PLANS["prefix"], "reparameterize": reparameterize}
    model = apply_config(copy.deepcopy(base), config_of(prefix=plan), tiny_info).model.eval()
    batch = inputs()
    with torch.no_grad():
        logits = model(**batch).logits
        alone = model(input_ids=batch["input_ids"][1:, :7], attention_mask=batch["attention_mask"][1:, :7]).logits
        assert not torch.allclose(logits, base(**batch).logits)  # a prefix changes attention (as in the paper)
    torch.testing.assert_close(logits[1:], alone)  # the widened mask still hides padding
    model(**batch, labels=torch.tensor([0, 1])).loss.backward()
    assert any("autopeft_prefix" in n for n, p in model.named_parameters() if p.grad is not None)


def test_head_is_trainable_but_not_counted(tiny_model, tiny_info):
    adapted = apply_config(load_model(tiny_model, 2), config_of("lora", "serial_adapter"), tiny_info)
    named = dict(adapted.model.named_parameters())
    assert sum(named[n].numel() for n in adapted.head) == tiny_info.head_params == 32 * 2 + 2
    assert all(named[n].requires_grad for n in adapted.head)
    assert not named["bert.encoder.layer.0.attention.self.query.base_layer.weight"].requires_grad


def test_per_site_ranks_survive_a_peft_round_trip(tmp_path, tiny_model, tiny_info):
    from peft import PeftConfig, get_peft_model

    space = SearchSpace.load("lora", tiny_info)
    config = next(c for c in sampled_configs(space, 20) if len({t[2] for t in c.methods["lora"]["targets"]}) > 1)
    peft_config(config, tiny_info).save_pretrained(str(tmp_path))
    loaded = get_peft_model(load_model(tiny_model, 2), PeftConfig.from_pretrained(str(tmp_path)))
    assert peft_trainable_params(loaded) == space.count(config)


@pytest.mark.parametrize("name", MODULE_ADDING)
def test_each_method_loads_in_peft_with_the_same_count_or_says_why_not(name, tmp_path, tiny_model, tiny_info):
    from peft import PeftConfig, get_peft_model

    from autopeft.methods.base import PeftMethod

    config = config_of(name)
    whole = peft_config(config, tiny_info, total_steps=100)
    if whole is None:
        assert METHODS[name].not_in_peft != PeftMethod.not_in_peft, f"{name} does not say why peft cannot express it"
        return
    whole.save_pretrained(str(tmp_path))
    loaded = get_peft_model(load_model(tiny_model, 2), PeftConfig.from_pretrained(str(tmp_path)))
    expected = apply_config(load_model(tiny_model, 2), config, tiny_info, 100).trainable_params()
    assert peft_trainable_params(loaded) == expected


def test_combinations_and_own_methods_are_not_peft_expressible(tiny_info):
    assert peft_config(config_of("lora", "ia3"), tiny_info) is None
    assert peft_config(config_of("serial_adapter"), tiny_info) is None
    uniform = {"targets": [[i, 4] for i in range(3)], "reparameterize": False}
    assert peft_config(config_of(prefix=uniform), tiny_info) is not None
