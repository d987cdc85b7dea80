"""The selection split: a stratified, seeded part of train held out; the search never reads validation."""

from __future__ import annotations

import numpy as np
import pytest

from autopeft.tasks import get_task, holdout_indices, holdout_size
from autopeft.training.data import training_and_evaluation


@pytest.mark.parametrize(("n", "size"), [(2490, 249), (3668, 367), (67349, 1000), (1000, 200), (96, 48), (5, 2)])
def test_the_size_is_a_tenth_bounded_to_200_and_1000_and_at_most_half(n, size):
    assert holdout_size(n) == size


def test_classes_keep_their_shares_and_the_seed_decides_which_examples():
    labels = np.array([0] * 700 + [1] * 250 + [2] * 50)
    held = holdout_indices(labels, regression=False, seed=0)
    assert len(held) == 200 and len(set(held.tolist())) == 200
    assert np.bincount(labels[held]).tolist() == [140, 50, 10]
    assert np.array_equal(held, holdout_indices(labels, regression=False, seed=0))
    assert not np.array_equal(held, holdout_indices(labels, regression=False, seed=1))


def test_a_regression_task_is_stratified_by_score_quintiles():
    scores = np.random.default_rng(0).uniform(0, 5, size=3000)
    held = holdout_indices(scores, regression=True, seed=0)
    assert len(held) == 300
    counts = np.histogram(scores[held], bins=np.quantile(scores, np.linspace(0, 1, 6)))[0]
    assert counts.min() >= 59 and counts.max() <= 61


def test_a_search_trains_on_the_rest_and_scores_on_the_held_out_part(tiny_model, data_dir, tmp_path):
    task = get_task("rte")
    train, selection = training_and_evaluation(task, "selection", tiny_model, 64, data_dir, str(tmp_path), 0)
    full, validation = training_and_evaluation(task, "validation", tiny_model, 64, data_dir, str(tmp_path))
    assert len(selection["labels"]) == 249 and len(train["labels"]) + 249 == len(full["labels"]) == 2490
    assert len(validation["labels"]) == 277
    from collections import Counter

    rows = lambda split: Counter(tuple(ids) for ids in split["input_ids"])  # noqa: E731
    assert rows(train) + rows(selection) == rows(full)  # a partition of the train split


def test_a_search_never_opens_the_validation_file(tiny_model, tmp_path):
    folder = tmp_path / "task"
    (folder / "data").mkdir(parents=True)
    rows = [
        f'{{"text": "example {i} {"good" if i % 2 else "bad"}", "label": "{"pos" if i % 2 else "neg"}"}}'
        for i in range(60)
    ]
    (folder / "data" / "train.jsonl").write_text("\n".join(rows) + "\n")
    task_file = folder / "task.yaml"
    task_file.write_text(
        "name: nodev\ntrain: data/train.jsonl\nvalidation: data/missing.jsonl\ntext_fields: [text]\n"
        "label_field: label\nlabels: [neg, pos]\nmetric: accuracy\n"
    )
    task = get_task(str(task_file))
    train, selection = training_and_evaluation(task, "selection", tiny_model, 32, None, str(tmp_path / "cache"), 0)
    assert len(train["labels"]) == len(selection["labels"]) == 30
    assert sorted(np.bincount(selection["labels"]).tolist()) == [15, 15]
    with pytest.raises(Exception, match="missing.jsonl"):
        training_and_evaluation(task, "validation", tiny_model, 32, None, str(tmp_path / "cache"))


def test_a_train_split_too_small_to_hold_out_from_is_a_clear_error():
    from autopeft.errors import DataError

    with pytest.raises(DataError, match="too few to hold out a selection part"):
        holdout_indices(np.array([0, 1, 0]), regression=False, seed=0)
