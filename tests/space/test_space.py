import itertools

import numpy as np
import pytest

from autopeft.errors import ConfigError
from autopeft.space import SPACES_DIR, SearchSpace

SHIPPED = sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def write(tmp_path, text: str) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return str(path)


LORA = """
name: t
methods:
  lora:
    modules: {choices: [query, value]}
    rank: {choices: [2, 4]}
"""


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_spaces_load_and_decode(name, tiny_info):
    space = SearchSpace.load(name, tiny_info)
    assert space.dimensions
    rng = np.random.default_rng(0)
    for _ in range(20):
        params = space.sample(rng)
        assert set(params) == set(space.dimensions)
        np.testing.assert_allclose(
            [
                space.from_unit(n, u) if isinstance(params[n], float) else params[n]
                for n, u in zip(space.dimensions, space.to_unit(params), strict=True)
            ],
            list(params.values()),
        )


def test_layer_count_comes_from_the_model(tiny_info):
    space = SearchSpace.load("default", tiny_info)
    assert sorted(n for n in space.dimensions if n.startswith("lora.layer.")) == [f"lora.layer.{i}" for i in range(3)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "name: t\nmethods: {lora: {modules: {choices: [query]}, rank: {choices: [2]}, colour: red}}",
            "methods.lora.colour: unknown key",
        ),
        ("name: t\nmethods: {lora: {modules: {choices: [query]}}}", "methods.lora.rank: required key is missing"),
        ("name: t\nmethods: {loraa: {}}", "methods.loraa: unknown method; allowed: lora"),
        (
            "name: t\nmethods: {lora: {modules: {choices: [qkv]}, rank: {choices: [2]}}}",
            "'qkv' is not a module of this bert model",
        ),
        (
            "name: t\nmethods: {lora: {modules: {choices: [query]}, rank: {choices: [64]}}}",
            "rank 64 exceeds the module width 32",
        ),
        (
            "name: t\nmethods: {lora: {modules: {choices: [query]}, rank: {choices: [2]}, layers: [0, 7]}}",
            "layer 7 does not exist",
        ),
        (
            "name: t\nmethods: {lora: {modules: {choices: [query]}, rank: {choices: [2]}, dropout: {low: 0.5, high: 0.1}}}",
            "must be below high",
        ),
        (
            "name: t\nmethods: {lora: {modules: {choices: [query]}, rank: {choices: [2]}, dropout: 1.5}}",
            "dropout: values must lie in [0, 1)",
        ),
        (
            "name: t\nmethods: {lora: {modules: {choices: [query]}, rank: {choices: [0]}}}",
            "rank.choices.0: Input should be greater than 0",
        ),
        (
            "name: t\nmethods: {lora: {modules: {choices: [query]}, rank: {choices: [2]}}}\ntraining: {learning_rate: {low: 0, high: 1, log: true}}",
            "log range needs low > 0",
        ),
        ("name: t\nmethods: {}", "methods: name at least one method"),
        ("name: t\nmethods: [lora", "malformed YAML at line 2"),
        ("- just a list", "expected a mapping"),
    ],
)
def test_validation_errors_name_file_key_and_allowed_values(tmp_path, tiny_info, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        SearchSpace.load(path, tiny_info)
    message = str(info.value)
    assert message.startswith(path), message
    assert expected.lower() in message.lower(), message
    assert "\n" not in message


def test_missing_space_file_is_a_clear_error(tiny_info):
    with pytest.raises(ConfigError, match="does not exist"):
        SearchSpace.load("no/such/space.yaml", tiny_info)


def test_decode_places_only_enabled_layers_and_modules(tmp_path, tiny_info):
    space = SearchSpace.load(write(tmp_path, LORA), tiny_info)
    params = {
        "lora.layer.0": True,
        "lora.layer.1": False,
        "lora.layer.2": True,
        "lora.module.query": True,
        "lora.module.value": False,
        "lora.rank.query": 4,
        "lora.rank.value": 2,
    }
    config = space.decode(params)
    assert config.methods["lora"]["targets"] == [[0, "query", 4], [2, "query", 4]]
    assert space.count(config) == 2 * 4 * (32 + 32)
    assert space.decode({**params, "lora.module.query": False}) is None


def _all_configs(space):
    names = list(space.dimensions)
    for values in itertools.product(*(space.dimensions[n].choices for n in names)):
        yield dict(zip(names, values, strict=True))


def test_minimal_count_is_the_true_minimum(tmp_path, tiny_info):
    space = SearchSpace.load(write(tmp_path, LORA.replace("[query, value]", "[query, ffn_in]")), tiny_info)
    counts = [space.count_params(p) for p in _all_configs(space)]
    assert space.minimal_count() == min(c for c in counts if c is not None)


def test_repair_reaches_the_budget_and_keeps_feasible_values(tmp_path, tiny_info):
    space = SearchSpace.load(write(tmp_path, LORA), tiny_info)
    limit = 3 * 2 * 64  # e.g. three (layer, module) sites at rank 2
    for params in _all_configs(space):
        repaired = space.repair(params, limit)
        assert space.is_feasible(repaired, limit)
        if space.is_feasible(params, limit):
            assert repaired == params


def test_repair_fails_clearly_when_nothing_fits(tmp_path, tiny_info):
    space = SearchSpace.load(write(tmp_path, LORA), tiny_info)
    with pytest.raises(ConfigError, match="fits 10 trainable parameters"):
        space.repair(space.sample(np.random.default_rng(0)), 10)


def test_numbers_in_exponent_notation_are_numbers(tmp_path, tiny_info):
    # YAML 1.1 (PyYAML) reads 1e-3 and 1.0e30 as strings; a space file means numbers.
    text = LORA + "training:\n  learning_rate: {choices: [1e-3, 1.0e30, 2.0e-4]}\n"
    space = SearchSpace.load(write(tmp_path, text), tiny_info)
    assert space.dimensions["train.learning_rate"].choices == (1e-3, 1e30, 2e-4)
