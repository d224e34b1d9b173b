"""What a defense may be searched over, described without a sampler: a defense declares its space and its paper's
reference setting as class attributes (``Defense.search_space``, ``Defense.paper_defaults``); the search layer
turns the description into Optuna distributions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeGuard

from pydantic import BaseModel

Value = bool | int | float | str  # what a parameter of a space takes (a JSON scalar, as trials store it)


@dataclass(frozen=True)
class SpaceParam:
    """One setting of a defense's space: a range ``[low, high]`` (``log``: sampled on a log scale; ``integer``:
    whole numbers), a list of ``choices``, or a ``fixed`` value. ``derived``: not sampled but computed from other
    parameters (its bounds clip the computed value; a study file may narrow them or fix the value, which then
    replaces the derivation)."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[Value, ...] | None = None
    fixed: Value | None = None
    derived: bool = False

    @property
    def bounds(self) -> tuple[float, float]:
        """The range of a ranged parameter (a ValueError for one of choices)."""
        if self.low is None or self.high is None:
            raise ValueError(f"{self.name} is a parameter of choices, not a range")
        return self.low, self.high

    def contains(self, value: object) -> TypeGuard[Value]:
        """Whether ``value`` is a value this parameter may take."""
        if self.fixed is not None:
            return value == self.fixed
        if self.choices is not None:
            return value in self.choices
        low, high = self.bounds
        return is_number(value) and low <= value <= high and (not self.integer or float(value).is_integer())


def is_number(value: object) -> TypeGuard[float]:
    """A finite int or float (a bool is a choice, not a number)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# How an installed package's defense may declare its space, as docs/own_model.md shows it: per setting a range
# ``(low, high)``, a list of choices, or a table of SpaceParam's fields.
Declared = tuple[float, float] | list[Value] | Mapping[str, Any]
DeclaredSpace = Sequence[SpaceParam] | Mapping[str, Declared]


def declared_space(defense: str, declared: DeclaredSpace) -> tuple[SpaceParam, ...]:
    """A defense's declared space as SpaceParams: the class attribute as it is, or the table form read per
    setting. A ValueError names a declaration that is neither."""
    if not isinstance(declared, Mapping):
        params = tuple(declared)
        if not all(isinstance(p, SpaceParam) for p in params):
            raise ValueError(
                f"defense {defense!r} declares search_space = {declared!r}; give a tuple of "
                "SpaceParam or a table {setting: (low, high) | [choices] | {SpaceParam fields}}"
            )
        return params
    return tuple(_declared_param(defense, setting, value) for setting, value in declared.items())


def _declared_param(defense: str, setting: str, value: object) -> SpaceParam:
    if isinstance(value, Mapping):
        return SpaceParam(setting, **value)
    if isinstance(value, tuple) and len(value) == 2 and all(is_number(v) for v in value):
        return SpaceParam(setting, float(value[0]), float(value[1]))
    if isinstance(value, list) and value:
        return SpaceParam(setting, choices=tuple(value))
    raise ValueError(
        f"defense {defense!r} declares search_space[{setting!r}] = {value!r}; give (low, high), a "
        f"list of choices or a dict of SpaceParam fields"
    )


def model_defaults(settings: type[BaseModel], space: Sequence[SpaceParam]) -> Mapping[str, Value]:
    """The settings model's own defaults of the space's parameters: a baseline's reference setting is the value
    usual in its literature, which its settings model already holds, so the two never disagree."""
    defaults = settings()
    return MappingProxyType({param.name: getattr(defaults, param.name) for param in space})
