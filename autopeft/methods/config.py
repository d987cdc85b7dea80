"""A PEFT configuration: one plan per method in use, and the training knobs (what a trial trains)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autopeft.errors import ConfigError

EXPORT_FILE = "autopeft.json"
"""The file of an export folder (and of a trained model's folder) that names its configuration."""


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


def read_config(path: str | Path) -> tuple[TrialConfig, dict[str, Any]]:
    """A configuration from an export folder, its ``autopeft.json``, or a JSON/YAML configuration file.

    A configuration file holds ``methods`` (method name -> plan, as in ``autopeft.json``'s
    ``config``) and ``training`` (``learning_rate``).

    Args:
        path: the folder or file.

    Returns:
        The configuration and the whole document it came from.
    """
    from autopeft.schema import read_yaml

    path = Path(path)
    file = path / EXPORT_FILE if path.is_dir() else path
    if not file.is_file():
        raise ConfigError(f"--config {str(path)!r}: no such file (nor an export folder with {EXPORT_FILE})")
    if file.suffix == ".json":
        try:
            raw = json.loads(file.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{file}: malformed JSON: {exc}") from None
    else:  # YAML read as space files are (YAML 1.2 numbers and booleans)
        raw = read_yaml(file)
    document = raw if isinstance(raw, dict) else {}
    body = document.get("config", document)
    if not isinstance(body, dict) or not isinstance(body.get("methods"), dict) or not body["methods"]:
        raise ConfigError(f"{file}: methods: a mapping of method name -> plan is required")
    training = body.get("training") or {}
    if not isinstance(training, dict):
        raise ConfigError(f"{file}: training: expected a mapping with learning_rate")
    return TrialConfig(methods=dict(body["methods"]), training=dict(training)), document
