"""The selection split: the part of a task's training data that the search scores trials on.

A search must not read the validation labels that its answer is reported on: the best of many
noisy trials, scored on the data that picked it, is overstated (the winner's curse). So a search
holds out a stratified, seeded part of the train split, trains its trials on the rest and scores
them on that part; ``retrain``, ``evaluate``, ``baselines`` and ``report`` train on the whole train
split and score on validation. A task file may name its own ``selection`` file instead.
"""

from __future__ import annotations

import numpy as np

from autopeft.errors import DataError

HOLDOUT_FRACTION = 0.10
"""Share of the train split held out for selection, ..."""
HOLDOUT_MIN, HOLDOUT_MAX = 200, 1000
"""... bounded to this many examples (and never more than half of a small train split)."""
REGRESSION_BINS = 5
"""A regression task is stratified by quantile bins of its score."""


MIN_TRAIN = 4
"""A train split needs this many examples for a selection part to be held out of it."""


def holdout_size(n_train: int) -> int:
    """How many of ``n_train`` training examples are held out for selection.

    Args:
        n_train: examples in the train split (at least :data:`MIN_TRAIN`).
    """
    size = min(max(round(HOLDOUT_FRACTION * n_train), HOLDOUT_MIN), HOLDOUT_MAX)
    return min(size, n_train // 2)


def holdout_indices(labels: np.ndarray, regression: bool, seed: int) -> np.ndarray:
    """The sorted indices of the training examples held out for selection: stratified by label, seeded.

    Each class (each score quintile for regression) gives its share of :func:`holdout_size`, the
    remainders going to the classes with the largest fractional parts.

    Args:
        labels: class ids (or scores) of the train split.
        regression: whether the labels are scores.
        seed: the study's seed (the same seed always holds out the same examples).
    """
    labels = np.asarray(labels)
    if len(labels) < MIN_TRAIN:
        raise DataError(
            f"the train split has {len(labels)} examples, too few to hold out a selection part (at least "
            f"{MIN_TRAIN}); give the task a selection file, or search with --select-on validation"
        )
    size = holdout_size(len(labels))
    if regression:
        edges = np.quantile(labels, np.linspace(0, 1, REGRESSION_BINS + 1)[1:-1])
        strata = np.searchsorted(edges, labels, side="right")
    else:
        strata = labels.astype(np.int64)
    values, counts = np.unique(strata, return_counts=True)
    quotas = counts * size / len(labels)
    taken = np.floor(quotas).astype(int)
    for i in np.argsort(-(quotas - taken))[: size - int(taken.sum())]:
        taken[i] += 1
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(np.flatnonzero(strata == value), k, replace=False) for value, k in zip(values, taken, strict=True)
    ]
    return np.sort(np.concatenate(chosen))
