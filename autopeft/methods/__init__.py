"""PEFT methods, one module each, registered by name for use in space files.

Each method's ``order`` decides when it is applied: peft's tuners first (they wrap the backbone's
own Linear modules), then autopeft's own modules (hooks on whatever is at a site by then), pruning
last.
"""

from __future__ import annotations

from autopeft.methods import (  # noqa: F401  (registers them)
    adalora,
    bottleneck,
    full,
    ia3,
    incre_lora,
    lora,
    prefix,
    pruning,
    side_tuning,
    sparse_plus_lowrank,
    subspace,
    vera,
)
from autopeft.methods.base import METHODS, BuildContext, PeftMethod, TrainingHook, get_method, register_method

__all__ = ["METHODS", "BuildContext", "PeftMethod", "TrainingHook", "get_method", "register_method"]
