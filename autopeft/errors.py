"""User-facing errors: each one is printed as a single line by the CLI (exit status 2)."""

from __future__ import annotations


class AutopeftError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ConfigError(AutopeftError):
    """An invalid search space, objective, study or trial configuration file."""


class BudgetError(AutopeftError):
    """An unparsable budget, or one that no configuration of the space can meet."""


class DataError(AutopeftError):
    """Missing or malformed task data."""


class TrialFailed(RuntimeError):
    """A trial that cannot produce a result (non-finite loss, out of memory, ...)."""


class SearchAborted(AutopeftError):
    """The search stopped early (too many failed trials); what finished is kept (exit status 1)."""
