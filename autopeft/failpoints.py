"""Named pauses at the moments a fault matters, for the fault-injection tests (off unless asked).

A kill at a random moment rarely lands inside a short phase (some of a trial's values written, an MLflow
run open, a store being created) on a busy machine. ``AUTOPEFT_FAILPOINTS="proposal.value=0.2,mlflow.run=1"``
makes the process pause that many seconds at each named point, so that a test, watching the stored state,
sees the phase and kills the process inside it. The pause changes no state; unset (the default), a point
costs one dictionary lookup.

Points: ``storage.create`` (the study store's lock held, its schema being created), ``proposal.value``
(before each value of a new trial is written), ``mlflow.open`` (the tracking store's lock held) and
``mlflow.run`` (a run created, not yet finished). Trainings are long enough to be seen without a pause.
"""

from __future__ import annotations

import os
import time
from functools import cache

ENV = "AUTOPEFT_FAILPOINTS"


@cache
def _pauses() -> dict[str, float]:
    pauses = {}
    for item in filter(None, (part.strip() for part in os.environ.get(ENV, "").split(","))):
        name, _, seconds = item.partition("=")
        pauses[name.strip()] = float(seconds or 1.0)
    return pauses


def pause(name: str) -> None:
    """Sleep as long as ``$AUTOPEFT_FAILPOINTS`` says for this point (not at all, unless it names it).

    Args:
        name: the point's name.
    """
    seconds = _pauses().get(name)
    if seconds:
        time.sleep(seconds)
