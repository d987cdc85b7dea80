"""Task metrics, by name: ``accuracy``, ``f1``, ``macro_f1``, ``mcc``, ``pearson``, ``spearman``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

MetricFn = Callable[[np.ndarray, np.ndarray], float]
METRICS: dict[str, MetricFn] = {}


def register_metric(name: str) -> Callable[[MetricFn], MetricFn]:
    """Decorator adding a metric ``fn(predictions, labels) -> float`` under ``name``."""

    def wrap(fn: MetricFn) -> MetricFn:
        METRICS[name] = fn
        return fn

    return wrap


@register_metric("accuracy")
def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of exact matches."""
    return float(np.mean(predictions == labels))


@register_metric("f1")
def f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Binary F1 of the positive class (label 1)."""
    from sklearn.metrics import f1_score

    return float(f1_score(labels, predictions, zero_division=0))


@register_metric("macro_f1")
def macro_f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Unweighted mean of per-class F1."""
    from sklearn.metrics import f1_score

    return float(f1_score(labels, predictions, average="macro", zero_division=0))


@register_metric("mcc")
def mcc(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation coefficient."""
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(labels, predictions))


def _correlation(kind: str, predictions: np.ndarray, labels: np.ndarray) -> float:
    from scipy import stats

    if np.std(predictions) == 0 or np.std(labels) == 0:
        return 0.0  # undefined for a constant predictor: score it as no correlation
    fn = stats.pearsonr if kind == "pearson" else stats.spearmanr
    return float(fn(predictions, labels)[0])


@register_metric("pearson")
def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Pearson correlation (0 for a constant prediction)."""
    return _correlation("pearson", predictions, labels)


@register_metric("spearman")
def spearman(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Spearman rank correlation (0 for a constant prediction)."""
    return _correlation("spearman", predictions, labels)


def compute_metrics(names: list[str], predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Evaluate several metrics on the same predictions.

    Args:
        names: metric names from :data:`METRICS`.
        predictions: class ids (classification) or scores (regression).
        labels: gold class ids or scores.
    """
    return {name: METRICS[name](predictions, labels) for name in names}
