"""The contract every PEFT method implements, and the registry that makes it searchable.

A method turns its section of a space file into searched dimensions, decodes sampled values into a
*plan* (a JSON-able dict describing exactly what to insert where), counts the plan's trainable
parameters without building anything, and applies the plan to a model. Methods that ``peft``
implements also give the ``peft`` configuration that realises a plan on its own.

Methods are applied by increasing ``order``: ``peft`` tuners first, so that they wrap the backbone's
own Linear modules; then autopeft's own modules, whose hooks see the wrapped modules; pruning last.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field, ValidationError

from autopeft.models import BackboneInfo
from autopeft.schema import Strict

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

ValueOf = Callable[[str, Any], Any]
"""``value_of(dimension_name, spec)``: the sampled value of a searched dimension, or the spec's fixed value."""


class MethodSection(Strict):
    """Keys every method's section of a space file has."""

    enabled: bool | Literal["searched"] = Field(
        True, description="true: always on; 'searched': one on/off dimension (or a member of an `exclusive` group)"
    )


class TrainingHook:
    """What a method does during training beyond its forward pass (AdaLoRA's allocation, pruning).

    The trainer calls :meth:`on_train_begin` once, adds :meth:`loss_term` to every step's loss,
    and calls :meth:`after_step` after each optimiser step, before the gradients are cleared.
    """

    def on_train_begin(self) -> None:
        """Before the first step."""

    def loss_term(self) -> torch.Tensor | None:
        """A regulariser added to the loss (``None``: nothing)."""
        return None

    def after_step(self, step: int) -> None:
        """After optimiser step number ``step`` (1-based), gradients still present.

        Args:
            step: steps done so far.
        """

    def report(self) -> dict:
        """What the hook did, for the trial's result (``method_report``)."""
        return {}

    def mask_arrays(self) -> dict[str, np.ndarray]:
        """Keep-masks (True: kept) the hook wrote into frozen backbone weights, by parameter path; none by default."""
        return {}


@dataclass
class BuildContext:
    """What a method may need while it is applied to a model.

    Attributes:
        info: the backbone's description.
        linears: ``(layer, generic module) -> nn.Linear`` of the backbone as loaded (before any
            method wrapped it), for methods that act on the frozen weights themselves.
        total_steps: optimiser steps the training will run (schedules are fractions of it).
        hooks: training hooks of the methods applied so far.
    """

    info: BackboneInfo
    linears: dict[tuple[int, str], torch.nn.Linear]
    total_steps: int = 1
    hooks: list[TrainingHook] = field(default_factory=list)


class PeftMethod(ABC):
    """A PEFT method the search can place, size, count and build.

    Attributes:
        name: key of the method's section under ``methods:`` in a space file.
        section: the pydantic model of that section.
        plan: the pydantic model of a plan (a decoded configuration of this method).
        adds_modules: whether the method trains parameters of its own (pruning does not: a configuration
            made of it alone places nothing).
        trains_backbone: whether what it trains is the backbone's own parameters (full fine-tuning), not new ones.
        order: when the method is applied relative to the others (lower first).
        conflicts: methods this one cannot share a model with (peft tuners wrapping the same Linear
            modules); a space holding both must put them in one ``exclusive`` group. Declared by
            either side, a conflict holds both ways.
        writes_masks: whether its training hook writes keep-masks into the frozen weights (exports
            then carry ``masks.npz``, and seeded runs keep a masks file each).
        not_in_peft: why peft cannot express a plan of this method, said when :meth:`peft_config`
            gives ``None``.
        identity_at_init: whether a freshly applied plan leaves the model's output unchanged (the
            tests check it where a method promises it).
        example: a small plan valid on any encoder of three or more layers (documentation, and
            every test that runs each registered method).
    """

    name: ClassVar[str]
    order: ClassVar[int]
    section: ClassVar[type[MethodSection]]
    plan: ClassVar[type[BaseModel]]
    adds_modules: ClassVar[bool] = True
    trains_backbone: ClassVar[bool] = False
    conflicts: ClassVar[frozenset[str]] = frozenset()
    writes_masks: ClassVar[bool] = False
    not_in_peft: ClassVar[str] = "not a peft method"
    identity_at_init: ClassVar[bool] = True
    example: ClassVar[dict[str, Any]]

    @abstractmethod
    def check(self, section: Any, info: BackboneInfo) -> str | None:
        """Validate a section against a backbone; return ``"key: problem"`` or ``None`` when fine.

        Args:
            section: the parsed section.
            info: the backbone it will be applied to.
        """

    @abstractmethod
    def dimensions(self, section: Any, info: BackboneInfo) -> dict[str, BaseDistribution]:
        """The searched dimensions of this section, by name (prefixed with the method's name).

        Args:
            section: the parsed section.
            info: the backbone.
        """

    @abstractmethod
    def decode(self, section: Any, value_of: ValueOf, info: BackboneInfo) -> dict | None:
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
    def minimal_count(self, section: Any, info: BackboneInfo) -> int:
        """The fewest trainable parameters any non-empty plan of this section can have.

        Args:
            section: the parsed section.
            info: the backbone.
        """

    @abstractmethod
    def apply(self, model: torch.nn.Module, plan: dict, context: BuildContext) -> TrainingHook | None:
        """Insert the plan's modules into a sequence-classification model, in place.

        Args:
            model: the model (its backbone is ``model.base_model``).
            plan: a validated plan.
            context: the backbone's description and its original Linear modules.

        Returns:
            A training hook when the method acts during training, else ``None``.
        """

    def trained_parameters(self, model: torch.nn.Module, created: list[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
        """The parameters this method trains, once applied: by default those it created with gradients.

        Args:
            model: the model the method was applied to.
            created: parameters that did not exist before the method was applied.
        """
        return [p for p in created if p.requires_grad]

    def check_plan(self, plan: dict, info: BackboneInfo) -> str | None:
        """Validate a plan written by hand (``autopeft trial --config``): ``"key: problem"`` or ``None``.

        Args:
            plan: the plan.
            info: the backbone.
        """
        try:
            self.plan.model_validate(plan)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
            return f"{key}: {msg}"
        return None

    def peft_config(self, plan: dict, info: BackboneInfo, total_steps: int = 1000) -> Any | None:
        """The ``peft.PeftConfig`` that realises the plan on its own, or ``None`` when peft cannot.

        Args:
            plan: a plan from :meth:`decode`.
            info: the backbone.
            total_steps: training steps (for methods with schedules, such as AdaLoRA).
        """
        return None

    def describe(self, plan: dict) -> str:
        """A short description for tables: ``lora L0,2 query+value r2-8`` (layers, places, sizes of the plan's targets).

        Args:
            plan: a plan from :meth:`decode`.
        """
        targets = plan.get("targets", [])
        if not targets:
            return self.name
        layers = sorted({t[0] for t in targets})
        places = sorted({t[1] for t in targets if isinstance(t[1], str)})
        sizes = sorted({t[-1] for t in targets if not isinstance(t[-1], str)})
        size_text = "" if not sizes else f" {sizes[0]}" if len(sizes) == 1 else f" {sizes[0]}-{sizes[-1]}"
        place_text = f" {'+'.join(places)}" if places else ""
        return f"{self.name} L{','.join(map(str, layers))}{place_text}{size_text}"

    def optimizer(self, plan: dict, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer | None:
        """An optimizer of the trained parameters when the method trains them its own way (LoRA+), else ``None``.

        Args:
            plan: the method's plan.
            model: the adapted model (exactly the trained parameters require gradients).
            lr: the configuration's learning rate.
        """
        return None

    def gradient_sites(self, plan: dict, info: BackboneInfo) -> list[tuple[int, str]]:
        """The backbone sites ``(layer, module)`` the gradient must reach for this plan to train (layer ``-1``: the
        embeddings); by default the plan's ``[layer, module, ...]`` targets. The lowest decides how much of the
        backbone keeps its activations for the backward pass (:mod:`autopeft.training.memory`).

        Args:
            plan: a plan from :meth:`decode`.
            info: the backbone.
        """
        return [(int(t[0]), str(t[1])) for t in plan.get("targets", [])]

    def kept_activations(self, plan: dict, info: BackboneInfo) -> dict[tuple, int]:
        """What the method's own modules keep for the backward pass, in elements per token, by a key naming the
        tensor (a tensor two sites or methods keep is counted once: ``("input", layer, "attn_in")``); none by
        default.

        Args:
            plan: a plan from :meth:`decode`.
            info: the backbone.
        """
        return {}

    def target_sparsity(self, plan: dict, info: BackboneInfo) -> float:
        """Fraction of the backbone's encoder-layer Linear weights the plan sets to zero.

        Args:
            plan: a plan from :meth:`decode`.
            info: the backbone.
        """
        return 0.0


METHODS: dict[str, PeftMethod] = {}


def register_method(cls: type[PeftMethod]) -> type[PeftMethod]:
    """Class decorator: make a method available under ``methods.<cls.name>`` in space files.

    :data:`METHODS` stays sorted by application order.
    """
    METHODS[cls.name] = cls()
    ordered = sorted(METHODS.items(), key=lambda item: item[1].order)
    METHODS.clear()
    METHODS.update(ordered)
    return cls


def get_method(name: str) -> PeftMethod:
    """The registered method called ``name``.

    Args:
        name: method name as written in a space file.
    """
    return METHODS[name]
