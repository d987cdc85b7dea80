"""PEFT methods, one module each, registered by name for use in space files."""

from __future__ import annotations

from autopeft.methods import lora  # noqa: F401  (registers the method)
from autopeft.methods.base import METHODS, PeftMethod, get_method, register_method

__all__ = ["METHODS", "PeftMethod", "get_method", "register_method"]
