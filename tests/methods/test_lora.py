import copy

import numpy as np
import pytest
import torch

from autopeft.methods.build import apply_config, peft_config, peft_trainable_params
from autopeft.models import backbone_info, default_model, load_model
from autopeft.space import SPACES_DIR, SearchSpace

SHIPPED = sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def sampled_configs(space, n, seed=0):
    rng = np.random.default_rng(seed)
    configs = []
    while len(configs) < n:
        config = space.decode(space.sample(rng))
        if config is not None:
            configs.append(config)
    return configs


@pytest.mark.parametrize("space_name", SHIPPED)
def test_predicted_count_equals_peft_count_on_tiny_bert(space_name, tiny_model, tiny_info):
    space = SearchSpace.load(space_name, tiny_info)
    base = load_model(tiny_model, 2)
    for config in sampled_configs(space, 50):
        model = apply_config(copy.deepcopy(base), config, tiny_info)
        assert peft_trainable_params(model) == space.count(config)


@pytest.mark.parametrize("space_name", SHIPPED)
def test_predicted_count_equals_peft_count_on_the_default_model(space_name):
    info = backbone_info(default_model(), 2)
    assert (info.num_layers, info.hidden_size, info.backbone_params) == (6, 384, 22_713_216)
    space = SearchSpace.load(space_name, info)
    base = load_model(default_model(), 2)
    for config in sampled_configs(space, 8, seed=1):
        model = apply_config(copy.deepcopy(base), config, info)
        assert peft_trainable_params(model) == space.count(config)


def test_head_is_trainable_but_not_counted(tiny_model, tiny_info):
    space = SearchSpace.load("default", tiny_info)
    model = apply_config(load_model(tiny_model, 2), sampled_configs(space, 1)[0], tiny_info)
    head = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "modules_to_save" in n)
    assert head == tiny_info.head_params == 32 * 2 + 2


def test_fresh_lora_leaves_the_output_unchanged(tiny_model, tiny_info):
    torch.manual_seed(0)
    base = load_model(tiny_model, 2).eval()
    config = sampled_configs(SearchSpace.load("lora", tiny_info), 1)[0]
    model = apply_config(copy.deepcopy(base), config, tiny_info).eval()
    inputs = {"input_ids": torch.randint(0, 1000, (2, 12)), "attention_mask": torch.ones(2, 12, dtype=torch.long)}
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, base(**inputs).logits)


def test_per_site_ranks_survive_a_config_round_trip(tmp_path, tiny_model, tiny_info):
    from peft import PeftConfig, get_peft_model

    space = SearchSpace.load("lora", tiny_info)
    config = next(c for c in sampled_configs(space, 20) if len({t[2] for t in c.methods["lora"]["targets"]}) > 1)
    peft_config(config, tiny_info).save_pretrained(str(tmp_path))
    loaded = get_peft_model(load_model(tiny_model, 2), PeftConfig.from_pretrained(str(tmp_path)))
    assert peft_trainable_params(loaded) == space.count(config)
