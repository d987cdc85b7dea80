"""Training memory: the live-tensor counter, the calibrated prediction against measurement, the options."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from conftest import REPO

from autopeft.errors import AutopeftError
from autopeft.methods.build import check_config, count_trainable
from autopeft.methods.config import TrialConfig
from autopeft.training.memory import LiveTensorBytes, MemoryShape, parse_memory, parse_shape
from autopeft.training.proxy import ProxySettings, measure_memory, memory_model

SHAPE = MemoryShape(8, 64)
SETTINGS = ProxySettings()


def test_the_counter_sees_what_is_allocated_and_freed_inside_it_and_its_peak():
    kept = torch.ones(10)  # before: not counted
    with LiveTensorBytes() as counter:
        a = torch.ones(1000)  # 4,000 bytes
        b = a * 2  # 4,000 more
        view = b[:10]  # a view: no new storage
        del a
        c = torch.zeros(250, dtype=torch.float64)  # 2,000, into a's freed place
    assert counter.peak == 8000 and counter.current == 6000
    assert kept.sum() == 10 and view.numel() == 10 and c.numel() == 250


def test_the_counter_sees_the_backward_pass():
    x = torch.ones(1000, requires_grad=True)
    with LiveTensorBytes() as counter:
        (x.exp() * 3).sum().backward()
    assert counter.current == 4000  # x.grad stays: the saved exp() and the temporaries were freed
    assert counter.peak >= 8000


@pytest.mark.parametrize(
    ("text", "expected"), [("6GiB", 6 * 2**30), ("512MiB", 512 * 2**20), ("1.5g", int(1.5 * 2**30)), ("100", 100)]
)
def test_memory_sizes_parse(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["6XB", "-1GiB", "0", "lots"])
def test_bad_memory_sizes_say_what_is_expected(text):
    with pytest.raises(AutopeftError, match="expected a positive size such as 6GiB"):
        parse_memory(text)


def test_shapes_parse_and_refuse():
    assert parse_shape("32x256") == MemoryShape(32, 256) and parse_shape("8X64").tokens == 512
    with pytest.raises(AutopeftError, match="BATCHxLENGTH"):
        parse_shape("32")


def _config(info, methods: dict) -> TrialConfig:
    return check_config(TrialConfig(methods, {"learning_rate": 1e-3}), info)


def load_bench():
    spec = importlib.util.spec_from_file_location("memory_bench", REPO / "bench" / "memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_calibration_is_cached_and_read_back(tiny_model, tiny_info, tmp_path):
    first = memory_model(tiny_model, 2, SETTINGS, SHAPE, str(tmp_path))
    (cached,) = tmp_path.iterdir()
    assert memory_model(tiny_model, 2, SETTINGS, SHAPE, str(tmp_path)) == first
    assert first.layer > 0 and first.entry[tiny_info.modules[0]] == 0 and str(first.shape) == "8x64"
    assert cached.suffix == ".json"


@pytest.mark.slow
def test_the_prediction_is_within_10_percent_of_the_measurement_on_held_out_configurations():
    """The issue's goal on the default backbone at 16x128: the configuration-dependent part (peak minus the shared
    part), predicted within 10% on configurations that did not calibrate the model, whose dependent parts differ
    at least 3-fold: bench/memory.py's configurations, which it prints with shallower ones beside."""
    from autopeft.models import backbone_info, default_model

    model_path, shape = default_model(), MemoryShape(16, 128)
    info = backbone_info(model_path, 2)
    model = memory_model(model_path, 2, SETTINGS, shape, None)
    shared = model.shared(info)
    errors, dependent = {}, []
    for name, config in load_bench().configurations(info).items():
        predicted = model.predict(config, info, count_trainable(config, info))
        measured = measure_memory(model_path, 2, SETTINGS, config, shape)
        dependent.append(measured - shared)
        errors[name] = round((predicted - measured) / (measured - shared), 3)
    assert len(errors) >= 8 and max(dependent) >= 3 * min(dependent), dependent
    assert max(map(abs, errors.values())) <= 0.10, errors


def test_the_upper_bound_is_above_every_configuration_full_fine_tuning_included(tiny_model, tiny_info):
    """The memory objective's hypervolume reference without a memory budget: one value no configuration passes."""
    import numpy as np

    from autopeft.space import SearchSpace

    model = memory_model(tiny_model, 2, SETTINGS, SHAPE, None)
    bound = model.upper_bound(tiny_info)
    space = SearchSpace.load("full", tiny_info)
    rng = np.random.default_rng(0)
    configs = [c for c in (space.decode(space.sample(rng)) for _ in range(100)) if c is not None]
    configs.append(_config(tiny_info, {"full_finetune": {}}))
    assert all(model.predict(c, tiny_info, count_trainable(c, tiny_info)) < bound for c in configs)


@pytest.mark.parametrize("name", ["serial_adapter", "parallel_adapter", "side_tuning", "sparse_plus_lowrank", "lora"])
def test_measuring_on_a_copy_leaves_the_trained_model_untouched(name, tiny_model, tiny_info):
    """The measurement trains a deep copy: the model's own parameters get no gradient and no update (hooks are bound
    to their copies, not closures over the originals)."""
    from autopeft.methods import METHODS
    from autopeft.methods.build import apply_config
    from autopeft.models import load_model
    from autopeft.training.proxy import measure_adapted

    adapted = apply_config(load_model(tiny_model, 2), _config(tiny_info, {name: METHODS[name].example}), tiny_info)
    before = {n: p.detach().clone() for n, p in adapted.model.named_parameters()}
    assert measure_adapted(adapted, 2, SHAPE) > 0
    for n, p in adapted.model.named_parameters():
        assert p.grad is None and torch.equal(p, before[n]), n
