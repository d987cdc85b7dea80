"""Objectives of a study, by name, and the ``objectives/*.yaml`` files that list them.

``metric`` is the task's standard dev-split metric (maximised). ``params`` is the trainable
fraction of the PEFT modules relative to the backbone (minimised); it is exact and known before
training, so optimisers may use it without a model. ``sparsity`` (maximised) is the fraction of
the backbone's encoder-layer Linear weights that the configuration prunes: exact before training,
so the study stores that target (the sparsity measured after training is kept beside it).
``neg_loss`` (maximised) is minus the mean loss on the split the trials are scored on, measured.
``memory`` (minimised) is the peak training memory in GiB at the study's batch shape, predicted before training
by the backbone's calibrated model (:mod:`autopeft.training.memory`): the study stores the prediction, which the
sampler assumes too; the measured peak is kept beside it.

The first objective is the *score*, what the search selects on: ``metric`` or ``neg_loss`` (the
default, :data:`autopeft.defaults.OBJECTIVES`: it ranks as full training does where the metric at one
proxy epoch still ties at the majority class). The task metric is measured and shown either way.
Exact values come from ``BoundStudy.exact_values``, the one formula the stored value and the sampler
share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autopeft.errors import ConfigError
from autopeft.schema import read_yaml

OBJECTIVES_DIR = Path(__file__).resolve().parents[1] / "objectives"


@dataclass(frozen=True)
class Objective:
    """One objective.

    Attributes:
        name: its name in ``--objectives`` and result fields.
        direction: ``maximize`` or ``minimize``.
        field: the result field holding its value.
        known_before_training: whether its value is exact before any training.
    """

    name: str
    direction: str
    field: str
    known_before_training: bool

    def reference(self, num_classes: int | None, observed: list[float]) -> float:
        """The worst value a measured objective's hypervolume counts from: 0 for the metric and sparsity;
        for ``neg_loss`` minus the uniform prediction's loss (ln of the classes), or on a regression task
        (``num_classes`` None) the worst value observed.

        Args:
            num_classes: the task's classes, ``None`` for regression.
            observed: the objective's stored values so far.
        """
        if self.name != "neg_loss":
            return 0.0
        return -math.log(num_classes) if num_classes else min(observed, default=0.0)

    def measured(self, result: dict) -> float:
        """The objective's value in a training's result (``metric``, or ``metrics.<name>``).

        Args:
            result: the proxy training's result.
        """
        if self.field.startswith("metrics."):
            return float(result["metrics"][self.field.removeprefix("metrics.")])
        return float(result[self.field])


OBJECTIVES: dict[str, Objective] = {
    "metric": Objective("metric", "maximize", "metric", known_before_training=False),
    "params": Objective("params", "minimize", "trainable_fraction", known_before_training=True),
    "sparsity": Objective("sparsity", "maximize", "sparsity", known_before_training=True),
    "neg_loss": Objective("neg_loss", "maximize", "metrics.neg_loss", known_before_training=False),
    "memory": Objective("memory", "minimize", "predicted_memory_gib", known_before_training=True),
}


SCORES = ("metric", "neg_loss")
"""Objectives that may come first: the measured score a search selects on."""


def prior_neg_loss(train_labels: Sequence[float], eval_labels: Sequence[float], regression: bool) -> float:
    """``neg_loss`` of a model that learnt only the training labels' distribution, on ``eval_labels``.

    The floor a trained model has to clear before its ``neg_loss`` says anything about the task:
    minus the cross-entropy of the training split's class frequencies (add-one smoothed, so a class
    absent from training costs a finite loss) against the evaluated labels, or on a regression task
    minus the mean squared error of predicting the training labels' mean. On RTE's balanced classes
    it is about -ln 2 = -0.693.

    Args:
        train_labels: the labels a trial learns from.
        eval_labels: the labels it is scored on.
        regression: whether the labels are real values.
    """
    train, scored = np.asarray(train_labels, dtype=float), np.asarray(eval_labels, dtype=float)
    if not len(scored):
        raise ValueError("no evaluated labels")
    if regression:
        return -float(np.mean((scored - train.mean()) ** 2))
    classes = int(max(train.max(initial=0), scored.max())) + 1
    frequencies = (np.bincount(train.astype(int), minlength=classes) + 1) / (len(train) + classes)
    return float(np.mean(np.log(frequencies[scored.astype(int)])))


def objectives_file(text: str) -> Path | None:
    """The objectives file ``--objectives`` names (a path, or a shipped file's name), or ``None`` for a list of names.

    Args:
        text: the option's value.
    """
    path, shipped = Path(text), OBJECTIVES_DIR / f"{text}.yaml"
    if path.suffix in (".yaml", ".yml"):
        return path
    return shipped if not path.exists() and shipped.is_file() and "," not in text else None


def parse_objectives(text: str) -> list[Objective]:
    """Objectives from ``neg_loss,params`` or from a YAML file under ``objectives/`` (by path or name).

    Args:
        text: a comma-separated list of names, an objectives file, or a shipped file's name.
    """
    path = objectives_file(text)
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"objectives file {str(path)!r} does not exist")
        raw = read_yaml(path)
        if not isinstance(raw, dict) or not isinstance(raw.get("objectives"), list):
            raise ConfigError(f"{path}: objectives: expected a list of objective names")
        names = [str(item["name"] if isinstance(item, dict) else item) for item in raw["objectives"]]
        source = f"{path}: objectives"
    else:
        names = [n.strip() for n in text.split(",") if n.strip()]
        source = "--objectives"
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown or not names:
        raise ConfigError(
            f"{source}: unknown objective {unknown[0] if unknown else ''!r}; allowed: {', '.join(OBJECTIVES)}"
        )
    if names[0] not in SCORES or len(set(names)) != len(names):
        raise ConfigError(
            f"{source}: the list must start with {' or '.join(map(repr, SCORES))} (the score a search selects on) "
            f"and name each objective once, got {names}"
        )
    return [OBJECTIVES[n] for n in names]
