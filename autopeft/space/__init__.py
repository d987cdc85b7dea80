"""Declarative search spaces: YAML schema, validation, encoding for samplers, exact counting."""

from __future__ import annotations

from autopeft.space.space import (
    SPACES_DIR,
    SearchSpace,
    TrialConfig,
    count_trainable,
    load_space_file,
    resolve_space_path,
    target_sparsity,
)

__all__ = [
    "SPACES_DIR",
    "SearchSpace",
    "TrialConfig",
    "count_trainable",
    "load_space_file",
    "resolve_space_path",
    "target_sparsity",
]
