"""The study: its spec (what a search is asked to do), its store, its binding to a backbone, and the view that
reads it back.

- :mod:`autopeft.study.spec`: :class:`StudySpec`, one nested and validated model (what / how / where);
- :mod:`autopeft.study.storage`: Optuna's RDB storage, opened with one-line errors; heartbeats;
- :mod:`autopeft.study.binding`: a spec resolved (:class:`BoundStudy`) and its study created or continued;
- :mod:`autopeft.study.view`: :class:`StudyView`, what a study holds, read once.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "binding": ("STATUS_QUO_SUFFIX", "Binding", "BoundStudy", "bind", "open_study", "study_settings", "write_settings"),
    "spec": ("Rungs", "StudySpec", "SuccessiveHalving", "mask_url", "study_slug"),
    "storage": ("HEARTBEATS_PER_GRACE", "connect_storage", "fail_stale_trials"),
    "view": (
        "DONE", "SPLIT_LABELS", "Pick", "StudyView", "dumps", "first_rung", "status_quo_record", "trial_config",
        "trial_record",
    ),
}  # fmt: skip
"""Each public name's submodule. Names are imported on first use, so reading a spec (a CLI's options, a one-line
error) does not import what binding a study to a backbone needs (torch, the methods)."""
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted(_HOME_OF)


def __getattr__(name: str) -> Any:
    if name in _HOME_OF:
        return getattr(importlib.import_module(f"{__name__}.{_HOME_OF[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
