"""Multi-objective successive halving: stop a proxy training early when it is clearly dominated.

A trial's trainable-parameter count is exact before training, so only its task metric is uncertain.
At each rung (a fraction of the proxy training) the trial's dev metric is compared with the metrics
of every other trial of the study at the same rung. A peer *clearly dominates* it there when the
peer's metric is strictly higher with at most as many parameters (a tie in the metric, common while
every trial still predicts the majority class, never stops a trial). The trial stops
when at least ``1 / reduction`` of the rung's trials dominate it: with one objective this is exactly
asynchronous successive halving (continue only in the top ``1 / reduction``); with the parameter
axis, a small trial is never stopped for being beaten by larger ones, so the cheap end of the
Pareto front survives.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from autopeft import defaults
from autopeft.errors import AutopeftError


@dataclass(frozen=True)
class EarlyStopping:
    """When trials are compared, and how many may go on.

    Attributes:
        rungs: fractions of the proxy training (increasing, in (0, 1)) at which the dev metric is
            measured and the trial compared with its peers.
        reduction: a trial stops when at least ``1 / reduction`` of the trials at the rung dominate it.
        grace: trials a rung must have seen (this one included) before any trial stops there.
    """

    rungs: tuple[float, ...] = defaults.RUNGS
    reduction: float = defaults.REDUCTION
    grace: int = defaults.GRACE

    def __post_init__(self) -> None:
        rungs = tuple(float(r) for r in self.rungs)
        object.__setattr__(self, "rungs", rungs)
        if not rungs or any(not 0 < r < 1 for r in rungs) or list(rungs) != sorted(set(rungs)):
            raise AutopeftError(f"early stopping rungs must be increasing fractions in (0, 1), got {list(rungs)}")
        if self.reduction <= 1:
            raise AutopeftError(f"early stopping reduction must be > 1, got {self.reduction}")
        if self.grace < 2:
            raise AutopeftError(f"early stopping grace must be at least 2 trials, got {self.grace}")


def dominators(metric: float, params: int, peers: Iterable[tuple[float, int]]) -> int:
    """How many ``(metric, params)`` peers have a strictly higher metric with no more parameters.

    Args:
        metric: the trial's metric at the rung.
        params: the trial's trainable parameters.
        peers: other trials' metric at the same rung and parameter count.
    """
    return sum(m > metric and p <= params for m, p in peers)


def should_stop(policy: EarlyStopping, metric: float, params: int, peers: list[tuple[float, int]]) -> bool:
    """Whether a trial at a rung is dominated by enough of the rung's trials to stop.

    Args:
        policy: the early-stopping policy.
        metric: the trial's metric at the rung (NaN always stops once the grace is over).
        params: the trial's trainable parameters.
        peers: the other trials' ``(metric, params)`` at the same rung.
    """
    seen = len(peers) + 1
    if seen < policy.grace:
        return False
    if not math.isfinite(metric):
        return True
    return dominators(metric, params, peers) >= math.ceil(seen / policy.reduction)


class RungBoard:
    """The rung metrics of a study's trials, and the stop decisions (one per process or Ray actor).

    Args:
        policy: the early-stopping policy.
        history: rung index -> ``{trial number: (metric, params)}`` of earlier trials.
    """

    def __init__(self, policy: EarlyStopping, history: dict[int, dict[int, tuple[float, int]]] | None = None) -> None:
        self.policy = policy
        self.rungs: dict[int, dict[int, tuple[float, int]]] = {r: dict(v) for r, v in (history or {}).items()}

    def decide(self, trial: int, rung: int, metric: float, params: int) -> bool:
        """Record a trial's metric at a rung; return whether the trial should stop.

        Args:
            trial: the trial's number.
            rung: index into ``policy.rungs``.
            metric: the dev metric at the rung.
            params: the trial's trainable parameters.
        """
        seen = self.rungs.setdefault(rung, {})
        peers = [value for number, value in seen.items() if number != trial]
        seen[trial] = (float(metric), int(params))
        return should_stop(self.policy, metric, params, peers)
