"""Parameter budgets: ``0.5%``, ``0.005`` or an absolute count such as ``120k``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from autopeft.errors import BudgetError

_SUFFIXES = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*(%|k|m|g)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Budget:
    """An upper bound on the trainable parameters of the PEFT modules.

    Exactly one of ``fraction`` (of the backbone's parameters, classification head excluded) and
    ``max_params`` (an absolute count) is set.
    """

    text: str
    fraction: float | None = None
    max_params: int | None = None

    def limit(self, backbone_params: int) -> int:
        """The largest allowed number of trainable PEFT parameters for a backbone.

        Args:
            backbone_params: parameters of the backbone, classification head excluded.

        Raises:
            BudgetError: the budget is not below the backbone's size (a count written as ``50M``
                can be; a fraction of 100% or more is refused when parsed).
        """
        if self.max_params is None:
            assert self.fraction is not None
            return int(self.fraction * backbone_params)
        if self.max_params >= backbone_params:
            raise BudgetError(
                f"--budget {self.text} is {self.max_params:,} trainable parameters, not fewer than the backbone's "
                f"{backbone_params:,}: a PEFT budget must be below 100% of the backbone"
            )
        return self.max_params

    def __str__(self) -> str:
        return self.text


def parse_budget(text: str) -> Budget:
    """Parse ``0.5%`` / ``0.005`` (fractions of the backbone) or ``120k`` / ``2M`` / ``50000``.

    A plain number below 1 is a fraction; a plain number of at least 1 (or with a k/M/G suffix) is
    an absolute parameter count.

    Args:
        text: the budget as the user wrote it.

    Raises:
        BudgetError: unparsable, not positive, or a fraction of 100% or more.
    """
    match = _PATTERN.match(str(text))
    if match is None:
        raise BudgetError(
            f"--budget {text!r} is not a budget: use a percentage (0.5%), a fraction (0.005) "
            "or a parameter count (120k, 2M, 50000)"
        )
    value, suffix = float(match.group(1)), (match.group(2) or "").lower()
    if value <= 0:
        raise BudgetError(f"--budget {text!r} must be greater than zero")
    if suffix == "%":
        if value >= 100:
            raise BudgetError(f"--budget {text!r} must be below 100%")
        return Budget(text=text, fraction=value / 100)
    if suffix == "" and value < 1:
        return Budget(text=text, fraction=value)
    count = value * _SUFFIXES[suffix]
    if count != int(count):
        raise BudgetError(f"--budget {text!r} is not a whole number of parameters")
    return Budget(text=text, max_params=int(count))
