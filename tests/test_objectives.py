import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from autopeft.objectives import prior_neg_loss
from autopeft.training.proxy import evaluate


def test_the_prior_of_balanced_classes_is_chance():
    labels = [0, 1] * 50
    assert prior_neg_loss(labels, labels, regression=False) == pytest.approx(-math.log(2))


def test_the_prior_is_smoothed_training_frequencies_against_the_evaluated_labels():
    # training 3:1, smoothed to 4/6 and 2/6; scored on one example of each class
    expected = (math.log(4 / 6) + math.log(2 / 6)) / 2
    assert prior_neg_loss([0, 0, 0, 1], [0, 1], regression=False) == pytest.approx(expected)
    # a class the training labels lack costs a finite loss
    assert math.isfinite(prior_neg_loss([0, 0], [1], regression=False))


def test_the_prior_of_a_regression_is_minus_the_squared_error_of_the_training_mean():
    assert prior_neg_loss([1.0, 3.0], [0.0, 4.0], regression=True) == pytest.approx(-(4 + 4) / 2)


def test_no_evaluated_labels_is_an_error():
    with pytest.raises(ValueError, match="no evaluated labels"):
        prior_neg_loss([0, 1], [], regression=False)


class _PriorModel(torch.nn.Module):
    """Predicts the same logits for every example, whatever it reads."""

    def __init__(self, logits: list[float]):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor(logits))

    def forward(self, input_ids, **_):
        return SimpleNamespace(logits=self.logits.expand(len(input_ids), -1))


@pytest.mark.parametrize("regression", [False, True])
def test_the_prior_is_the_neg_loss_the_evaluator_gives_a_model_that_learnt_only_the_label_distribution(regression):
    """The floor the search compares against is the trainer's own ``neg_loss`` of a prior predictor."""
    rng = np.random.default_rng(0)
    train = rng.uniform(0, 5, 40) if regression else rng.choice(3, 40, p=[0.6, 0.3, 0.1])
    scored = rng.uniform(0, 5, 25) if regression else rng.choice(3, 25, p=[0.5, 0.3, 0.2])
    if regression:
        logits = [float(train.mean())]
    else:
        logits = list(np.log((np.bincount(train, minlength=3) + 1) / (len(train) + 3)))
    split = {
        "input_ids": [[1] * int(n) for n in rng.integers(2, 9, len(scored))],
        "token_type_ids": None,
        "pad_token_id": 0,
        "labels": scored.astype(np.float32 if regression else np.int64),
    }
    measured = evaluate(_PriorModel(logits), split, [], regression, batch_size=4)["neg_loss"]
    assert measured == pytest.approx(prior_neg_loss(train, scored, regression), rel=1e-5)
