"""A PEFT configuration: one plan per method in use, and the training knobs (what a trial trains)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrialConfig:
    """One PEFT configuration: a plan per method in use, and the training knobs.

    Attributes:
        methods: method name -> plan (see each method's ``decode``).
        training: ``learning_rate`` and other training values.
    """

    methods: dict[str, dict]
    training: dict[str, float]

    def to_dict(self) -> dict:
        """JSON-able form, stored with each trial and in exports."""
        return {"methods": self.methods, "training": self.training}

    @classmethod
    def from_dict(cls, data: dict) -> TrialConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(methods=dict(data["methods"]), training=dict(data["training"]))
