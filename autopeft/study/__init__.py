"""The study: its spec (what a search is asked to do), its store, its binding to a backbone, and the view that
reads it back.

- :mod:`autopeft.study.spec`: :class:`StudySpec`, one nested and validated model (what / how / where);
- :mod:`autopeft.study.storage`: Optuna's RDB storage, opened with one-line errors; heartbeats;
- :mod:`autopeft.study.binding`: a spec resolved (:class:`BoundStudy`) and its study created or continued;
- :mod:`autopeft.study.view`: :class:`StudyView`, what a study holds, read once.
"""

from __future__ import annotations

from autopeft.study.binding import (
    STATUS_QUO_SUFFIX,
    Binding,
    BoundStudy,
    bind,
    open_study,
    study_settings,
    write_settings,
)
from autopeft.study.spec import Rungs, StudySpec, SuccessiveHalving, mask_url, study_slug
from autopeft.study.storage import HEARTBEATS_PER_GRACE, connect_storage, fail_stale_trials
from autopeft.study.view import (
    DONE,
    SPLIT_LABELS,
    Pick,
    StudyView,
    dumps,
    first_rung,
    status_quo_record,
    trial_config,
    trial_record,
)

__all__ = [
    "DONE",
    "HEARTBEATS_PER_GRACE",
    "SPLIT_LABELS",
    "STATUS_QUO_SUFFIX",
    "Binding",
    "BoundStudy",
    "Pick",
    "Rungs",
    "StudySpec",
    "StudyView",
    "SuccessiveHalving",
    "bind",
    "connect_storage",
    "dumps",
    "fail_stale_trials",
    "first_rung",
    "mask_url",
    "open_study",
    "status_quo_record",
    "study_settings",
    "study_slug",
    "trial_config",
    "trial_record",
    "write_settings",
]
