"""The fidelity bench's last line speaks of the proxy the search trains by default."""

from __future__ import annotations

import dataclasses
import importlib.util

from conftest import REPO

from autopeft.training import ProxySettings


def load_bench():
    spec = importlib.util.spec_from_file_location("proxy_fidelity", REPO / "bench" / "proxy_fidelity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_search_default_is_the_setting_that_trains_as_the_search_does():
    bench = load_bench()
    default = ProxySettings()
    whole = dataclasses.replace(default, max_train_samples=None)
    assert bench._is_search_default(default, None)
    # a split smaller than the default's cap: training every example is what the default does
    assert bench._is_search_default(whole, default.max_train_samples - 1)
    assert not bench._is_search_default(whole, default.max_train_samples + 1000)  # the default stops at its cap
    assert not bench._is_search_default(whole, None)  # the split's size unknown: only an equal setting is
    other_batch = dataclasses.replace(whole, batch_size=2 * default.batch_size)
    assert not bench._is_search_default(other_batch, default.max_train_samples - 1)
    named = [name for name, s in bench.PROXY_SETTINGS.items() if bench._is_search_default(s, 3304)]
    assert named == ["e1-n2048-b8"]  # 2,048 of MRPC's 3,304 examples (train split less its selection part)
