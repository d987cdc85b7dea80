"""Multi-objective successive halving: stop a proxy training early when it ranks low among its peers.

A trial's trainable-parameter count is exact before training, so only its task metric is uncertain.
At each rung (a fraction of the proxy training) the trial's *score* is compared with the scores of
every other trial of the study at the same rung: by default minus its validation loss, which ranks
configurations as full training does (Spearman 0.71 on MRPC after one epoch,
``bench/proxy_fidelity.py``) even while every trial's thresholded metric still sits at the
majority class; ``score="train_loss"`` uses the recent training loss (free) and
``score="metric"`` the task metric itself. A peer *clearly dominates* a trial there when the peer's score is strictly
higher with at most as many parameters. The rung's trials are sorted into
non-dominated fronts under that relation (front 0: dominated by none; front 1: dominated only by
front 0; ...), and a trial goes on only while fewer than ``ceil(seen / reduction)`` trials sit in
strictly better fronts: asynchronous successive halving (keep the top ``1 / reduction``) with the
top ordered as NSGA-II orders a population (as in MO-ASHA, Schmucker et al., 2021). Ties never stop
a trial (with ``score="metric"``, while every trial still predicts the majority class, all share
front 0), and a small trial is never stopped for being beaten by larger ones only, so the cheap end
of the front survives.
"""

from __future__ import annotations

import math

from autopeft.study import EarlyStopping


def front_ranks(points: list[tuple[float, int]]) -> list[int]:
    """Non-dominated front index of each ``(metric, params)`` point under clear domination.

    Args:
        points: metric (higher is better) and parameter count (lower is better) of each trial.
    """
    ranks = [-1] * len(points)
    remaining = set(range(len(points)))
    front = 0
    while remaining:
        current = {
            i
            for i in remaining
            if not any(points[j][0] > points[i][0] and points[j][1] <= points[i][1] for j in remaining)
        }
        for i in current:
            ranks[i] = front
        remaining -= current
        front += 1
    return ranks


def should_stop(policy: EarlyStopping, metric: float, params: int, peers: list[tuple[float, int]]) -> bool:
    """Whether a trial at a rung falls outside the top ``1 / reduction`` of the rung's trials.

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
    finite = [(m, p) for m, p in peers if math.isfinite(m)]
    ranks = front_ranks([(metric, params), *finite])
    ahead = sum(rank < ranks[0] for rank in ranks[1:])
    return ahead >= math.ceil(seen / policy.reduction)


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
