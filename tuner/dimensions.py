"""Search-space dimensions: a float or integer range, a list of choices, or a fixed value.

Plain data with no imports of tuner's own, so that both the recipe's table of dimensions
(``recipe.DIMENSIONS``) and the config that validates them can use these types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FloatRange:
    """A float sampled from [low, high], log-uniformly when ``log``."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class IntRange:
    """An integer sampled from low..high (inclusive) in steps of ``step``."""

    low: int
    high: int
    step: int = 1


@dataclass(frozen=True)
class Choice:
    """One of a fixed list of values (a categorical parameter)."""

    values: tuple[Any, ...]


@dataclass(frozen=True)
class Fixed:
    """A dimension pinned to one value: not sampled, recorded as is."""

    value: Any


Dimension = FloatRange | IntRange | Choice | Fixed


def dimension_values(dimension: Dimension) -> tuple[Any, ...]:
    """The values a dimension can take, where it has a finite list (ranges: their bounds)."""
    if isinstance(dimension, Fixed):
        return (dimension.value,)
    if isinstance(dimension, Choice):
        return dimension.values
    return (dimension.low, dimension.high)


@dataclass(frozen=True)
class Rule:
    """What one key accepts, kept in its field's metadata so that it is stated only once.

    ``also`` lists literal values taken as they are beside the typed ones (``never``);
    ``optional`` lets a section key be null (its default is None).
    """

    kind: type
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    also: tuple[Any, ...] = ()
    optional: bool = False
