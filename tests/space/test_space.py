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
        for (name, value), u in zip(params.items(), space.to_unit(params), strict=True):
            expected = pytest.approx(value) if isinstance(value, float) else value
            assert space.from_unit(name, u) == expected, name


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
        (
            "name: t\nmethods: {loraa: {}}",
            "methods.loraa: unknown method; allowed: adalora, full_finetune, ia3, incre_lora, lora",
        ),
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


FULL_ERRORS = [
    ("methods: {dora: {}}", "methods.dora: unknown method; allowed: adalora"),
    ("methods: {ia3: {modules: {choices: [gate_proj]}}}", "methods.ia3.modules.choices: 'gate_proj' is not a module"),
    (
        "methods: {serial_adapter: {positions: {choices: [ffn]}, size: {choices: [8, 64]}}}",
        "methods.serial_adapter.size.choices: size 64 exceeds the hidden size 32",
    ),
    (
        "methods: {lora: {modules: {choices: [query]}, rank: {choices: [2]}}, pruning: {target: 1.0}}",
        "methods.pruning.target: sparsity must lie in [0, 1), got [1.0]",
    ),
    (
        "methods: {lora: {modules: {choices: [query]}, rank: {choices: [2]}}, pruning: {start: 0.6, end: 0.3}}",
        "methods.pruning.end: the schedule ends (0.3) before or when it starts (0.6)",
    ),
    (
        "methods: {lora: {modules: {choices: [query]}, rank: {choices: [2]}}, pruning: {granularity: '3:8x'}}",
        "methods.pruning.granularity: '3:8x' is not known; allowed: unstructured, N:M",
    ),
    (
        "methods: {lora: {modules: {choices: [query]}, rank: {choices: [2]}}, pruning: {schedule: exponential}}",
        "methods.pruning.schedule: 'exponential' is not known; allowed: one_shot, linear, cubic",
    ),
    (
        "methods: {parallel_adapter: {positions: {choices: [ffn]}, size: {choices: [4]}, activation: swish}}",
        "methods.parallel_adapter.activation: 'swish' is not known; allowed: relu, gelu",
    ),
    (
        "methods: {lora: {modules: {choices: [query]}, rank: {choices: [2]}}, "
        "adalora: {modules: {choices: [value]}, init_rank: 4}}",
        "exclusive: adalora and lora cannot train in one model",
    ),
    (
        "exclusive: [[lora, ia3]]\nmethods: {lora: {modules: {choices: [query]}, rank: {choices: [2]}}}",
        "exclusive.0: 'ia3' is not a method of this space",
    ),
]


@pytest.mark.parametrize(("body", "expected"), FULL_ERRORS)
def test_full_space_validation_errors_name_file_key_and_allowed_values(tmp_path, tiny_info, body, expected):
    path = write(tmp_path, "name: t\n" + body)
    with pytest.raises(ConfigError) as info:
        SearchSpace.load(path, tiny_info)
    message = str(info.value)
    assert message.startswith(path) and "\n" not in message
    assert expected in message, message


EXCLUSIVE = """
name: t
exclusive: [[lora, ia3]]
methods:
  lora: {enabled: searched, layers: all, modules: {choices: [query], searched: false}, rank: {choices: [2]}}
  ia3: {enabled: searched, layers: all, modules: {choices: [key], searched: false}}
  pruning: {enabled: searched, target: {choices: [0.5, 0.9]}, schedule: one_shot}
"""


def test_exclusive_groups_and_switches_decide_which_methods_are_on(tmp_path, tiny_info):
    space = SearchSpace.load(write(tmp_path, EXCLUSIVE), tiny_info)
    assert space.dimensions["method.lora-or-ia3"].choices == ("lora", "ia3", "none")
    assert "pruning.enabled" in space.dimensions and "lora.enabled" not in space.dimensions
    values = {"method.lora-or-ia3": "ia3", "pruning.enabled": True, "pruning.target": 0.9}
    config = space.decode(values)
    assert set(config.methods) == {"ia3", "pruning"} and config.methods["pruning"]["target"] == 0.9
    assert space.target_sparsity(config) == pytest.approx(0.9, abs=1e-3)
    assert space.decode({**values, "method.lora-or-ia3": "none"}) is None  # pruning alone adds nothing to train
    assert space.minimal_count() == 3 * 32  # IA3 on every layer's key
    repaired = space.repair({**values, "method.lora-or-ia3": "none"}, 10**6)
    assert space.decode(repaired) is not None


def test_enabled_false_switches_a_method_off(tmp_path, tiny_info):
    text = EXCLUSIVE.replace("ia3: {enabled: searched,", "ia3: {enabled: false,").replace(
        "exclusive: [[lora, ia3]]\n", ""
    )
    text = text.replace("lora: {enabled: searched,", "lora: {enabled: true,")
    space = SearchSpace.load(write(tmp_path, text), tiny_info)
    assert not any(name.startswith("ia3") for name in space.dimensions)
    rng = np.random.default_rng(0)
    for _ in range(20):
        config = space.decode(space.sample(rng))
        assert "ia3" not in config.methods and "lora" in config.methods
    assert space.minimal_count() == 3 * 2 * (32 + 32)  # LoRA r=2 on every layer's query; nothing of IA3


def test_the_model_encoding_gives_unordered_choices_one_column_each(tmp_path, tiny_info):
    space = SearchSpace.load(write(tmp_path, EXCLUSIVE), tiny_info)
    values = {"method.lora-or-ia3": "ia3", "pruning.enabled": True, "pruning.target": 0.9}
    values = {**space.sample(np.random.default_rng(0)), **values}
    names = list(space.dimensions)
    features = space.features(values)
    assert len(features) == len(names) + 2  # the three-way group is three 0/1 columns; the rest one each
    group = names.index("method.lora-or-ia3")
    assert list(features[group : group + 3]) == [0.0, 1.0, 0.0]  # lora, ia3, none: no choice between two others
    assert features[group + 3] == 1.0  # pruning on
    none = space.features({**values, "method.lora-or-ia3": "none"})
    lora = space.features({**values, "method.lora-or-ia3": "lora"})
    assert np.abs(none - features).sum() == np.abs(lora - features).sum() == 2.0  # every other choice equally far


@pytest.mark.parametrize("name", SHIPPED)
def test_canonical_values_train_the_same_model_and_are_a_fixed_point(name, tiny_info):
    space = SearchSpace.load(name, tiny_info)
    rng = np.random.default_rng(0)
    changed = 0
    for _ in range(40):
        values = space.sample(rng)
        config = space.decode(values)
        canonical = space.canonical(values)
        if config is None:
            assert canonical == values
            continue
        assert space.decode(canonical).to_dict() == config.to_dict()
        assert space.canonical(canonical) == canonical
        assert space.key(values) == space.key(canonical)
        changed += canonical != values
    if name in EVERY_DIMENSION_COUNTS:
        assert not changed  # every searched value is in the plan whenever something is placed
    else:
        assert changed  # sparse placements leave some dimensions without effect (a switched-off module's rank)


EVERY_DIMENSION_COUNTS = ("incre_lora", "side_tuning", "sparse_plus_lowrank", "subspace")
"""Shipped spaces of one method with module-wide knobs: no dimension is ever without effect."""


def test_values_differing_only_where_nothing_trains_are_one_configuration(tiny_info):
    space = SearchSpace.load("default", tiny_info)
    values = {**space.sample(np.random.default_rng(1)), "lora.module.query": False, "lora.module.value": True}
    values["lora.layer.0"] = True
    other_rank = {**values, "lora.rank.query": 16 if values["lora.rank.query"] != 16 else 1}  # query is off
    assert space.key(other_rank) == space.key(values)
    assert np.array_equal(space.features(other_rank), space.features(values))
    assert space.canonical(values)["lora.rank.query"] == 1  # the first choice
    active = {**values, "lora.rank.value": 16 if values["lora.rank.value"] != 16 else 1}  # value is on
    assert space.key(active) != space.key(values)
    assert not np.array_equal(space.features(active), space.features(values))


def test_range_neighbours_move_one_range_dimension_within_its_bounds(tiny_info):
    space = SearchSpace.load("default", tiny_info)
    values = {**space.sample(np.random.default_rng(2)), "lora.dropout": 0.01, "train.learning_rate": 5e-4}
    plain = space.neighbours(values)
    moved = space.neighbours(values, range_step=0.1)
    extra = moved[len(plain) :] if moved[: len(plain)] == plain else None
    assert extra is not None and len(extra) == 3  # dropout 0.01 is too close to 0 to move down
    for neighbour in extra:
        differs = [n for n in values if neighbour[n] != values[n]]
        assert len(differs) == 1 and differs[0] in ("lora.dropout", "train.learning_rate")
        dist = space.dimensions[differs[0]]
        assert dist.low <= neighbour[differs[0]] <= dist.high
    rates = sorted(n["train.learning_rate"] for n in extra if n["train.learning_rate"] != 5e-4)
    width = np.log(space.dimensions["train.learning_rate"].high / space.dimensions["train.learning_rate"].low)
    assert np.allclose(np.log(rates[1] / rates[0]), 0.2 * width)  # a tenth of the log-width each way


def test_the_per_configuration_caches_keep_their_most_recent_entries_only():
    from autopeft.space.space import LruCache

    cache = LruCache(3)
    for key in "abc":
        cache[key] = key.upper()
    assert cache.get("a") == "A"  # read: now the most recent
    cache["d"] = "D"
    assert list(cache) == ["c", "a", "d"] and cache.get("b") is None and len(cache) == 3


def test_repair_under_a_memory_budget_moves_a_single_low_layer_up(tiny_model, tiny_info):
    # Memory follows the lowest trained layer: LoRA on layer 0 alone fits no memory budget below its own
    # depth, and no single change helps (switching layer 0 off places nothing; switching another on keeps
    # layer 0). Repair looks two changes away and moves it up.
    from autopeft.study.binding import check_memory_budget
    from autopeft.training.memory import MemoryShape
    from autopeft.training.proxy import ProxySettings, memory_model

    space = SearchSpace.load("default", tiny_info)
    limit = 10**6
    memory = memory_model(tiny_model, 2, ProxySettings(), MemoryShape(8, 64), None)
    params = space.sample(np.random.default_rng(0))
    params.update({name: name in ("lora.layer.0", "lora.module.query") for name in params if ".layer." in name})
    params.update({name: name == "lora.module.query" for name in params if ".module." in name})
    on_top = {**params, "lora.layer.0": False, f"lora.layer.{tiny_info.num_layers - 1}": True}

    def predicted(values):
        config = space.decode(values)
        return memory.predict(config, tiny_info, space.count(config))

    assert predicted(on_top) < predicted(params)
    check_memory_budget(space, memory, (predicted(on_top) + predicted(params)) // 2, limit)
    assert not space.is_feasible(params, limit)
    repaired = space.repair(params, limit)
    assert space.is_feasible(repaired, limit) and not repaired["lora.layer.0"]


def _switched_on(values: dict, prefix: str) -> int:
    return sum(bool(v) for name, v in values.items() if name.startswith(prefix))


def test_how_many_layers_and_module_types_are_on_is_uniform_and_no_switch_is_favoured(tiny_info):
    # Independent switches at 1/2 reach every layer of a 6-layer model once in 64 draws (the status quo's
    # placement); drawn by placement axis, every count of layers (and of module types) is equally likely.
    space = SearchSpace.load("default", tiny_info)
    rng = np.random.default_rng(0)
    draws = [space.sample(rng) for _ in range(3000)]
    for prefix, n in (("lora.layer.", tiny_info.num_layers), ("lora.module.", 6)):
        counts = np.bincount([_switched_on(v, prefix) for v in draws], minlength=n + 1)
        assert counts[0] == 0  # an axis with nothing on places nothing
        assert np.allclose(counts[1:] / len(draws), 1 / n, atol=0.03), counts
        on = [name for name in space.dimensions if name.startswith(prefix)]
        share = np.array([np.mean([v[name] for v in draws]) for name in on])
        assert np.allclose(share, (n + 1) / (2 * n), atol=0.03), share  # the first switch as likely as the others
    rates = np.log([v["train.learning_rate"] for v in draws])
    dist = space.dimensions["train.learning_rate"]
    assert np.log(dist.low) <= rates.min() and rates.max() <= np.log(dist.high)


def test_modules_searched_per_layer_are_one_axis_of_sites(tiny_info):
    # lora.yaml: every layer may carry LoRA and each layer chooses its modules: how many (layer, module) sites are
    # on is uniform, so some draws leave whole layers out and some place every site.
    from autopeft.methods.placement import layer_switch, module_switch, placement_axis

    assert placement_axis(layer_switch("lora", 2)) == "lora.layer"
    assert placement_axis(module_switch("lora", "query")) == "lora.module"
    assert placement_axis(module_switch("lora", "query", 2)) == "lora.module"
    assert placement_axis("lora.rank.query") is None and placement_axis("train.learning_rate") is None
    space = SearchSpace.load("lora", tiny_info)
    rng = np.random.default_rng(0)
    draws = [space.sample(rng) for _ in range(2000)]
    sites = 6 * tiny_info.num_layers
    counts = np.bincount([_switched_on(v, "lora.module.") for v in draws], minlength=sites + 1)
    assert counts[0] == 0 and np.allclose(counts[1:] / len(draws), 1 / sites, atol=0.02), counts
    layers_out = [
        sum(
            not any(v[module_switch("lora", m, i)] for m in "query key value attn_out ffn_in ffn_out".split())
            for i in range(tiny_info.num_layers)
        )
        for v in draws
    ]
    assert 0.2 < np.mean(np.array(layers_out) > 0) < 0.8
