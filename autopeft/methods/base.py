"""The contract every PEFT method implements, and the registry that makes it searchable.

A method turns its section of a space file into searched dimensions, decodes sampled values into a
*plan* (a JSON-able dict describing exactly what to insert where), counts the plan's trainable
parameters without building anything, and builds the peft configuration that realises it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from optuna.distributions import BaseDistribution
from pydantic import BaseModel

from autopeft.models import BackboneInfo

ValueOf = Callable[[str, Any], Any]
"""``value_of(dimension_name, spec)``: the sampled value of a searched dimension, or the spec's fixed value."""


class PeftMethod(ABC):
    """A PEFT method the search can place, size and count.

    Attributes:
        name: key of the method's section under ``methods:`` in a space file.
        section: the pydantic model of that section.
    """

    name: ClassVar[str]
    section: ClassVar[type[BaseModel]]

    @abstractmethod
    def check(self, section: BaseModel, info: BackboneInfo) -> str | None:
        """Validate a section against a backbone; return ``"key: problem"`` or ``None`` when fine.

        Args:
            section: the parsed section.
            info: the backbone it will be applied to.
        """

    @abstractmethod
    def dimensions(self, section: BaseModel, info: BackboneInfo) -> dict[str, BaseDistribution]:
        """The searched dimensions of this section, by name (prefixed with the method's name).

        Args:
            section: the parsed section.
            info: the backbone.
        """

    @abstractmethod
    def decode(self, section: BaseModel, value_of: ValueOf, info: BackboneInfo) -> dict | None:
        """Build the plan of one configuration, or ``None`` when it places nothing.

        Args:
            section: the parsed section.
            value_of: gives the value of each (searched or fixed) dimension.
            info: the backbone.
        """

    @abstractmethod
    def count(self, plan: dict, info: BackboneInfo) -> int:
        """Exact number of trainable parameters the plan adds (the head excluded).

        Args:
            plan: a plan from :meth:`decode`.
            info: the backbone.
        """

    @abstractmethod
    def minimal_count(self, section: BaseModel, info: BackboneInfo) -> int:
        """The fewest trainable parameters any non-empty plan of this section can have.

        Args:
            section: the parsed section.
            info: the backbone.
        """

    @abstractmethod
    def peft_config(self, plan: dict, info: BackboneInfo) -> Any:
        """The ``peft.PeftConfig`` that realises the plan on a sequence-classification model.

        Args:
            plan: a plan from :meth:`decode`.
            info: the backbone.
        """


METHODS: dict[str, PeftMethod] = {}


def register_method(cls: type[PeftMethod]) -> type[PeftMethod]:
    """Class decorator: make a method available under ``methods.<cls.name>`` in space files."""
    METHODS[cls.name] = cls()
    return cls


def get_method(name: str) -> PeftMethod:
    """The registered method called ``name``.

    Args:
        name: method name as written in a space file.
    """
    return METHODS[name]
