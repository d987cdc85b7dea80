"""Declarative search spaces: YAML schema, validation, encoding for samplers, exact counting."""

from __future__ import annotations

from autopeft.space.space import (
    SPACES_DIR,
    SearchSpace,
    load_space_file,
    resolve_space_path,
)

__all__ = [
    "SPACES_DIR",
    "SearchSpace",
    "load_space_file",
    "resolve_space_path",
]
