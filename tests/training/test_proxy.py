import numpy as np
import pytest

from autopeft.errors import TrialFailed
from autopeft.space import SearchSpace
from autopeft.tasks import get_task
from autopeft.training import ProxyRequest, ProxySettings, run_proxy_trial
from autopeft.training.data import collate, length_grouped_batches, tokenized_split

SETTINGS = ProxySettings(epochs=1, max_train_samples=64, max_eval_samples=64, batch_size=16)


def test_length_grouped_batches_cover_every_example_once_with_little_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 120, size=1000)
    batches = length_grouped_batches(lengths, 16, rng)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    naive = sum(len(b) * lengths[b].max() for b in np.array_split(rng.permutation(1000), len(batches)))
    assert padded < 0.75 * naive


def test_tokenisation_is_cached_and_collation_pads_per_batch(tmp_path, tiny_model, data_dir):
    task = get_task("rte")
    first = tokenized_split(task, "validation", tiny_model, 64, data_dir, tmp_path)
    assert len(list(tmp_path.glob("rte-validation-*.json"))) == 1
    again = tokenized_split(task, "validation", tiny_model, 64, data_dir, tmp_path)
    assert again["input_ids"][:5] == first["input_ids"][:5]
    batch = collate(first, np.array([0, 1, 2]), regression=False)
    width = max(len(first["input_ids"][i]) for i in range(3))
    assert batch["input_ids"].shape == (3, width) <= (3, 64)
    assert batch["attention_mask"].sum() == sum(len(first["input_ids"][i]) for i in range(3))


@pytest.mark.parametrize("task", ["rte", "stsb"])
def test_proxy_trial_trains_and_evaluates(task, tmp_path, tiny_model, tiny_info, data_dir):
    from autopeft.models import backbone_info

    info = backbone_info(tiny_model, get_task(task).num_labels)
    space = SearchSpace.load("default", info)
    config = space.decode(space.repair(space.sample(np.random.default_rng(0)), 10**6))
    request = ProxyRequest(tiny_model, task, data_dir, config.to_dict(), SETTINGS, seed=1, cache_dir=str(tmp_path))
    result = run_proxy_trial(request)
    assert result["trainable_params"] == space.count(config)
    assert result["steps"] == 4
    assert set(result["metrics"]) == {*get_task(task).metrics, "neg_loss"}
    assert np.isfinite(result["metric"])


def test_diverging_training_fails_the_trial(tmp_path, tiny_model, tiny_info, data_dir):
    space = SearchSpace.load("default", tiny_info)
    values = space.sample(np.random.default_rng(0))
    values.update({name: True for name in space.dimensions if name.startswith(("lora.layer.", "lora.module."))})
    config = space.decode(space.repair(values, 10**6)).to_dict()  # LoRA on every site: updates reach the residual
    config["training"]["learning_rate"] = 1e30  # the first update blows the weights up
    request = ProxyRequest(tiny_model, "rte", data_dir, config, SETTINGS, cache_dir=str(tmp_path))
    with pytest.raises(TrialFailed, match="non-finite loss"):
        run_proxy_trial(request)


@pytest.mark.parametrize("stop_at", [None, 0, 1])
def test_rungs_are_evaluated_and_a_stop_ends_training_there(stop_at, tmp_path, tiny_model, tiny_info, data_dir):
    space = SearchSpace.load("default", tiny_info)
    config = space.decode(space.repair(space.sample(np.random.default_rng(0)), 10**6)).to_dict()
    settings = ProxySettings(epochs=1, max_train_samples=96, max_eval_samples=64, batch_size=16)  # 6 steps
    request = ProxyRequest(
        tiny_model, "rte", data_dir, config, settings, seed=1, cache_dir=str(tmp_path), rungs=(1 / 3,)
    )
    calls = []

    def at_rung(record: dict) -> float | None:
        calls.append(record)
        return None if record["rung"] == stop_at else (2 / 3, 1.0)[record["rung"]]

    result = run_proxy_trial(request, at_rung)
    reached = 2 if stop_at is None else stop_at + 1
    assert [(r["rung"], r["step"], r["fraction"]) for r in calls] == [(0, 2, 1 / 3), (1, 4, 2 / 3)][:reached]
    assert result["rungs"] == calls and result["rung_scores"] == [r["metrics"]["neg_loss"] for r in calls]
    assert all(set(r["metrics"]) == {"accuracy", "neg_loss"} for r in calls)
    assert result["pruned"] == (stop_at is not None)
    assert result["steps"] == {None: 6, 0: 2, 1: 4}[stop_at] and result["total_steps"] == 6
    if stop_at is not None:
        assert result["metric"] == calls[-1]["metrics"]["accuracy"]  # the metric it was stopped at


def test_a_run_scored_at_rungs_continues_exactly_as_one_that_is_not(tmp_path, tiny_model, tiny_info, data_dir):
    """A rung is a snapshot of one run: scoring draws nothing from the run's random streams and changes no
    state, so the promoted run ends with the same losses and scores as the same run never paused."""
    from autopeft.training.proxy import static_rungs

    space = SearchSpace.load("default", tiny_info)
    config = space.decode(space.repair(space.sample(np.random.default_rng(3)), 10**6)).to_dict()
    settings = ProxySettings(epochs=2, max_train_samples=96, max_eval_samples=64, batch_size=16)  # 12 steps
    plain = run_proxy_trial(
        ProxyRequest(tiny_model, "rte", data_dir, config, settings, seed=4, cache_dir=str(tmp_path))
    )
    request = ProxyRequest(tiny_model, "rte", data_dir, config, settings, seed=4, cache_dir=str(tmp_path),
                           rungs=(1 / 6, 1 / 2))  # fmt: skip
    paused = run_proxy_trial(request, static_rungs(request.rungs))
    assert [r["step"] for r in paused["rungs"]] == [2, 6]
    assert paused["train_losses"] == plain["train_losses"] and paused["metrics"] == plain["metrics"]
    assert paused["steps"] == plain["steps"] == 12  # the whole run's steps, not a rung's plus the rest


def test_predictions_are_each_examples_in_the_splits_order(tmp_path, tiny_model, tiny_info, data_dir):
    space = SearchSpace.load("default", tiny_info)
    config = space.decode(space.repair(space.sample(np.random.default_rng(0)), 10**6)).to_dict()
    request = ProxyRequest(tiny_model, "rte", data_dir, config, SETTINGS, cache_dir=str(tmp_path), predictions=True)
    result = run_proxy_trial(request)
    found = result["predictions"]
    assert len(found["labels"]) == len(found["predicted"]) == len(found["probabilities"]) == 64
    assert np.mean(np.asarray(found["labels"]) == np.asarray(found["predicted"])) == pytest.approx(result["metric"])
    assert np.allclose(np.asarray(found["probabilities"]).sum(axis=1), 1.0, atol=1e-4)
    assert np.array_equal(np.argmax(found["probabilities"], axis=1), found["predicted"])


def test_without_a_callback_no_rung_is_evaluated(tmp_path, tiny_model, tiny_info, data_dir):
    space = SearchSpace.load("default", tiny_info)
    config = space.decode(space.repair(space.sample(np.random.default_rng(0)), 10**6)).to_dict()
    request = ProxyRequest(tiny_model, "rte", data_dir, config, SETTINGS, cache_dir=str(tmp_path), rungs=(0.5,))
    result = run_proxy_trial(request)
    assert result["rungs"] == [] and not result["pruned"] and result["steps"] == 4


def test_without_attention_dropout_only_the_attention_probabilities_lose_it(tiny_model):
    import torch

    from autopeft.models import load_model

    kept, dropped = load_model(tiny_model, 2), load_model(tiny_model, 2, attention_dropout=False)

    def rates(model, where: str) -> set[float]:
        return {m.p for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout) and where in n}

    assert rates(kept, "attention.self") == {0.1} and rates(dropped, "attention.self") == {0.0}
    assert rates(dropped, "output") == {0.1}  # hidden-state dropout stays
    assert torch.equal(
        kept.bert.encoder.layer[0].attention.self.query.weight,
        dropped.bert.encoder.layer[0].attention.self.query.weight,
    )


def test_every_fresh_parameter_comes_from_the_seed_and_the_pretrained_ones_stay(tiny_model):
    import torch

    from autopeft.training.proxy import _fresh_backbone

    first, again, other = (_fresh_backbone(tiny_model, 2, True, seed) for seed in (0, 0, 1))
    assert torch.equal(first.classifier.weight, again.classifier.weight)
    assert not torch.equal(first.classifier.weight, other.classifier.weight)  # two seeds: two heads
    encoder = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(dict(first.named_parameters())[encoder], dict(other.named_parameters())[encoder])


SEEDED_RUN = """
import json, sys
from autopeft.training import ProxyRequest, ProxySettings, run_proxy_trial
model, data_dir, cache, seeds = sys.argv[1], sys.argv[2], sys.argv[3], [int(s) for s in sys.argv[4:]]
config = {"methods": {"lora": {"targets": [[0, "query", 2], [2, "value", 4]], "alpha": 16, "dropout": 0.1}},
          "training": {"learning_rate": 0.005}}
settings = ProxySettings(epochs=1, max_train_samples=48, max_eval_samples=48, batch_size=16)
for seed in seeds:  # the last seed's result is printed; earlier ones only warm the worker up
    result = run_proxy_trial(ProxyRequest(model, "rte", data_dir, config, settings, seed=seed, cache_dir=cache))
print(json.dumps({"losses": result["train_losses"], "neg_loss": result["metrics"]["neg_loss"]}))
"""


def test_one_seed_gives_the_same_result_in_two_processes_whatever_ran_before(tmp_path, tiny_model, data_dir):
    import json
    import subprocess
    import sys

    def run(*seeds):
        args = [sys.executable, "-c", SEEDED_RUN, tiny_model, data_dir, str(tmp_path), *map(str, seeds)]
        done = subprocess.run(args, capture_output=True, text=True, timeout=300, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    alone, after_another = run(5), run(9, 5)
    assert alone == after_another  # a worker's history does not reach the result
    assert run(6) != alone
