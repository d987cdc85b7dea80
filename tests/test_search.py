"""The start-up estimate counts the training a trial will really do."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from autopeft.search import DataStatistics, estimate_trial_seconds
from autopeft.study import StudySpec, open_study
from autopeft.training import ProxySettings

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture()
def bound_for(tiny_model, tmp_path):
    def make(proxy: ProxySettings):
        spec = StudySpec(
            task="rte", budget="2%", model=tiny_model, proxy=proxy, data_dir=None, runs_dir=str(tmp_path),
            study_name=f"s-{proxy.max_train_samples}-{proxy.batch_size}",
        )  # fmt: skip
        return open_study(spec)

    return make


def test_a_sample_larger_than_the_split_costs_the_split(bound_for):
    data = DataStatistics(train_examples=1000, train_tokens_per_example=50.0, eval_tokens=20_000)
    capped = estimate_trial_seconds(bound_for(ProxySettings(max_train_samples=4096)), data, threads=1)
    whole = estimate_trial_seconds(bound_for(ProxySettings(max_train_samples=None)), data, threads=1)
    smaller = estimate_trial_seconds(bound_for(ProxySettings(max_train_samples=500)), data, threads=1)
    assert capped == whole
    assert smaller < whole


def test_the_batch_size_does_not_change_the_examples_trained(bound_for):
    data = DataStatistics(train_examples=1000, train_tokens_per_example=50.0, eval_tokens=20_000)
    proxy = ProxySettings(max_train_samples=None, batch_size=8)
    at_8 = estimate_trial_seconds(bound_for(proxy), data, threads=1)
    at_16 = estimate_trial_seconds(bound_for(dataclasses.replace(proxy, batch_size=16)), data, threads=1)
    assert at_8 == pytest.approx(at_16, rel=0.01)
