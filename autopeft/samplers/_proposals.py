"""How each proposal was made, kept by the sampler until the trial records it."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Proposal:
    """Where one trial's values came from.

    Attributes:
        kind: ``sobol`` (quasi-random start), ``bayes`` (the acquisition's choice), ``fallback``
            (a random feasible proposal because the model could not be used), or the wrapped
            sampler's name for baselines (``random``, ``tpe``, ...).
        reason: why a fallback happened (``None`` otherwise).
        repaired: whether the values were changed to fit the budget.
    """

    kind: str
    reason: str | None = None
    repaired: bool = False

    @property
    def is_fallback(self) -> bool:
        """Whether the proposal is a fallback to random values."""
        return self.kind == "fallback"

    def to_dict(self) -> dict:
        """JSON-able form (stored as the trial's ``proposal`` user attribute)."""
        return asdict(self)


class ProposalLog:
    """Mixin of the samplers here: the :class:`Proposal` of each trial number, until it is taken."""

    def _record(self, number: int, proposal: Proposal) -> None:
        if not hasattr(self, "_proposals"):
            self._proposals: dict[int, Proposal] = {}
        self._proposals[number] = proposal

    def take_proposal(self, number: int) -> Proposal | None:
        """How trial ``number``'s values were proposed (``None`` when this sampler did not propose them).

        Args:
            number: the trial's number.
        """
        return getattr(self, "_proposals", {}).pop(number, None)
