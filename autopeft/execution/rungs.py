"""Successive halving up to full fidelity: which trials go on past a rung, and where the first rung lies.

Every trial trains on the full schedule; a rung is a snapshot of that one run (a fraction of its steps,
scored on the selection split). The rungs lie at ``first x reduction^k`` of the schedule, then at its end.
At each rung a trial's score is compared with every other entry of the study at the same rung (the
status quo's too: it is an entry, and it never stops). A peer *clearly dominates* a trial when the
peer's score is strictly higher with at most as many parameters. The entries are sorted into
non-dominated fronts under that relation (front 0: dominated by none; front 1: dominated only by front
0; ...), and a trial goes on only while fewer than ``ceil(seen / reduction)`` entries sit in strictly
better fronts: asynchronous successive halving keeping the top ``1 / reduction``, the top ordered as
NSGA-II orders a population (as in MO-ASHA, Schmucker et al., 2021). Ties never stop a trial, and a small
trial is never stopped for being beaten by larger ones only, so the cheap end of the front survives. A
trial that goes on continues its own training where it was (no restart).

**The first rung must learn.** Until it is settled, the first rung is raised whenever an entry reaches it
and its ``neg_loss`` does not clear the label prior's by :data:`autopeft.pareto.LEARNT_MARGIN`: the first
rung doubles (up to ``cap``) and every trial below it continues in place to the new first rung. The first
entry that clears the prior there settles it (for the whole study: it is stored); at the cap it settles
unlearnt, and the search says so. Ranking at a rung where every model still predicts the label prior
would rank noise.

**A later rung ranks only once an entry has learnt there.** Above the first rung, a trial scored at a rung
where no entry (itself included) has yet cleared the label prior goes on unranked, and the search says so;
once one entry has learnt there, the rung ranks as above, over every entry it has seen. The first rung keeps
its own rule: raised until it learns, or ranked at its cap, which bounds the compute of a task the proxy
cannot learn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autopeft.study import SuccessiveHalving

EPSILON = 1e-9


def front_ranks(points: list[tuple[float, int]]) -> list[int]:
    """Non-dominated front index of each ``(score, params)`` point under clear domination.

    Args:
        points: score (higher is better) and parameter count (lower is better) of each entry.
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


def should_stop(policy: SuccessiveHalving, score: float, params: int, peers: list[tuple[float, int]]) -> bool:
    """Whether an entry at a rung falls outside the top ``1 / reduction`` of the rung's entries.

    Args:
        policy: the successive-halving policy.
        score: the entry's score at the rung (NaN always stops once the grace is over).
        params: the entry's trainable parameters.
        peers: the other entries' ``(score, params)`` at the same rung.
    """
    seen = len(peers) + 1
    if seen < policy.grace:
        return False
    if not math.isfinite(score):
        return True
    finite = [(m, p) for m, p in peers if math.isfinite(m)]
    ranks = front_ranks([(score, params), *finite])
    ahead = sum(rank < ranks[0] for rank in ranks[1:])
    return ahead >= math.ceil(seen / policy.reduction)


def learnt(neg_loss: float, prior: float | None) -> bool:
    """Whether a ``neg_loss`` clears the label prior's by the learnt margin (no prior known: counts as learnt).

    Args:
        neg_loss: an entry's ``neg_loss`` at a rung.
        prior: the study's label-prior ``neg_loss`` (:func:`autopeft.objectives.prior_neg_loss`).
    """
    from autopeft.pareto import LEARNT_MARGIN

    if prior is None:
        return True
    return (neg_loss - prior) / abs(prior) >= LEARNT_MARGIN if prior else neg_loss > prior


@dataclass(frozen=True)
class Decision:
    """What an entry does after a rung.

    Attributes:
        next_fraction: where it reports next (1.0: it trains to the end), ``None`` when it stops here.
        level: the rung's index on the study's ladder (``None``: scored below the settled first rung).
        event: a line to show (the first rung raised or settled), or ``None``.
        first_rung: the first rung after this decision.
        settled: whether it is settled.
    """

    next_fraction: float | None
    level: int | None = None
    event: str | None = None
    first_rung: float = 0.0
    settled: bool = False


class RungBoard:
    """The entries at each rung of a study, the first rung's state, and the decisions (one per search process;
    a Ray actor while a search runs).

    Args:
        policy: the successive-halving policy.
        prior: the label prior's ``neg_loss`` on the selection split (``None``: the first rung is not checked).
        first_rung: the first rung already settled in the study (``None``: still to settle).
        history: rung index -> ``{entry: (score, params, neg_loss)}`` of entries stored earlier (trials by
            number, the status quo by any other key).
    """

    def __init__(
        self,
        policy: SuccessiveHalving,
        prior: float | None = None,
        first_rung: float | None = None,
        history: dict[int, dict[object, tuple[float, int, float]]] | None = None,
    ) -> None:
        self.policy = policy
        self.prior = prior
        self.first = first_rung if first_rung is not None else policy.first
        self.settled = first_rung is not None
        history = history or {}
        self.rungs = {r: {k: (score, params) for k, (score, params, _) in v.items()} for r, v in history.items()}
        self.learnt_levels = {r for r, v in history.items() if any(learnt(n, prior) for _, _, n in v.values())}
        self.events: list[str] = []

    def first_rung(self) -> float:
        """Where a new trial reports first."""
        return self.first

    def state(self) -> tuple[float, bool]:
        """The first rung and whether it is settled (what the search stores)."""
        return self.first, self.settled

    def decide(
        self, entry: object, fraction: float, score: float, neg_loss: float, params: int, keep: bool = False
    ) -> Decision:
        """Record an entry's score at the rung at ``fraction``; say where it goes next.

        Args:
            entry: the trial's number (or the status quo's key).
            fraction: the fraction of the schedule where it was scored.
            score: its rung score (what rungs rank on).
            neg_loss: its ``neg_loss`` there (the first rung's learnt check).
            params: its trainable parameters.
            keep: never stop it (the status quo reaches the end whatever it scores).
        """
        event = None
        if not self.settled:
            if fraction < self.first - EPSILON:
                return self._decision(self.first)  # scored below a first rung raised meanwhile: go on to it
            if learnt(neg_loss, self.prior):
                self.settled = True
                where = _fraction_text(self.first)
                event = f"first rung settled at {where} of the schedule: {entry_text(entry)} learnt there"
            elif self.first < self.policy.cap - EPSILON:
                raised = min(self.policy.cap, 2 * self.first)
                event = (
                    f"first rung raised from {_fraction_text(self.first)} to {_fraction_text(raised)} of the schedule: "
                    f"{entry_text(entry)}'s neg_loss {neg_loss:.4f} did not clear the label prior's "
                    f"{self.prior:.4f} there"
                )
                self.first = raised
                self.events.append(event)
                return self._decision(raised, event=event)
            else:
                self.settled = True
                event = (
                    f"first rung left at its cap {_fraction_text(self.first)} of the schedule without learning the "
                    f"task: no entry's neg_loss cleared the label prior's {self.prior:.4f} there"
                )
        if event is not None:
            self.events.append(event)
        ladder = self.policy.ladder(self.first)
        level = next((i for i, f in enumerate(ladder) if abs(f - fraction) < 1e-6), None)
        if level is None:  # not a rung of the settled ladder (a raise left it between two): on to the next one
            later = [f for f in ladder if f > fraction + EPSILON]
            return self._decision(later[0] if later else 1.0, event=event)
        seen = self.rungs.setdefault(level, {})
        peers = [value for key, value in seen.items() if key != entry]
        seen[entry] = (float(score), int(params))
        if learnt(neg_loss, self.prior):
            self.learnt_levels.add(level)
        if keep or not should_stop(self.policy, score, params, peers):
            return self._decision(ladder[level + 1], level, event)
        if level > 0 and level not in self.learnt_levels:
            withheld = (
                f"{entry_text(entry)} goes on past rung {_fraction_text(fraction)} unranked: no entry's neg_loss "
                f"has cleared the label prior's {self.prior:.4f} there yet"
            )
            self.events.append(withheld)
            return self._decision(ladder[level + 1], level, "; ".join(filter(None, (event, withheld))))
        return self._decision(None, level, event)

    def _decision(self, next_fraction: float | None, level: int | None = None, event: str | None = None) -> Decision:
        return Decision(next_fraction, level, event, self.first, self.settled)


def entry_text(entry: object) -> str:
    """How an entry is named in a line: ``trial 7``, or ``the status quo``."""
    return f"trial {entry}" if isinstance(entry, int) else "the status quo"


def _fraction_text(fraction: float) -> str:
    from fractions import Fraction

    return str(Fraction(fraction).limit_denominator(64))
