"""The search space in Optuna terms: sample a trial's recipe, and replay a known recipe (a
classic one, or a warm start's) into the Optuna params that make sampling return it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna

from tuner.config import Choice, Dimension, Fixed, IntRange, SpaceConfig
from tuner.recipe import (
    DIMENSIONS,
    NEVER,
    RECIPES,
    STAGES,
    Recipe,
    Schedule,
    TrialParams,
    frozen_depth_at,
)

Suggest = Callable[[str, Dimension], Any]
"""How a dimension gets its value: (name, dimension) -> value."""


def sample(trial: optuna.Trial, space: SpaceConfig, epochs: int) -> TrialParams:
    """Sample one recipe of an ``epochs``-epoch run; Optuna is asked only what matters.

    Fixed dimensions are not Optuna parameters; they are recorded in the study config.
    """
    return build_params(lambda name, dimension: _suggest(trial, name, dimension), space, epochs)


def build_params(suggest: Suggest, space: SpaceConfig, epochs: int) -> TrialParams:
    """The recipe, asking ``suggest`` for each dimension only where it changes what trains.

    ``unfreeze_epoch`` only when something is frozen, ``unfreeze_mode`` only when more than one
    stage unfreezes, ``backbone_lr`` and ``bn_policy`` only when some backbone stage trains,
    ``layer_decay`` only when two or more stages do (it sets their rates apart); every other
    dimension of ``recipe.DIMENSIONS`` always, in the table's order.
    """
    freeze_depth = suggest("freeze_depth", space.freeze_depth)
    unfreeze_epoch = None
    if freeze_depth > 0:
        value = suggest("unfreeze_epoch", space.unfreeze_epoch)
        unfreeze_epoch = None if value == NEVER else int(value)
    unfreeze_mode = "all"
    if unfreeze_epoch is not None and freeze_depth > 1:
        unfreeze_mode = suggest("unfreeze_mode", space.unfreeze_mode)
    schedule = Schedule(freeze_depth, unfreeze_epoch, unfreeze_mode)
    stages_that_train = len(STAGES) - frozen_depth_at(schedule, epochs - 1)
    values: dict[str, Any] = schedule._asdict()
    if stages_that_train == 0:
        values |= {"backbone_lr": None, "bn_policy": "train"}
    if stages_that_train < 2:
        values["layer_decay"] = 1.0
    for name in DIMENSIONS:
        if name not in values:
            values[name] = suggest(name, getattr(space, name))
    return TrialParams(**values)


def _suggest(trial: optuna.Trial, name: str, dimension: Dimension) -> Any:
    if isinstance(dimension, Fixed):
        return dimension.value
    if isinstance(dimension, Choice):
        return trial.suggest_categorical(name, dimension.values)
    if isinstance(dimension, IntRange):
        return trial.suggest_int(name, dimension.low, dimension.high, step=dimension.step)
    return trial.suggest_float(name, dimension.low, dimension.high, log=dimension.log)


class OutsideSpace(Exception):
    """A known recipe asks for a value the space does not allow (or leaves one unsaid)."""


def replay(values: dict[str, Any], space: SpaceConfig, epochs: int) -> dict[str, Any]:
    """The Optuna params to enqueue so that :func:`sample` returns the recipe ``values``.

    ``values`` is a recipe by dimension name (a TrialParams as a dict, or part of one);
    fixed dimensions are left out of the result. Raises OutsideSpace, saying which
    dimension, when the space cannot express the recipe.
    """
    params: dict[str, Any] = {}

    def take(name: str, dimension: Dimension) -> Any:
        value = values.get(name)
        if name == "unfreeze_epoch" and value is None:
            value = NEVER
        if value is None:
            raise OutsideSpace(f"it has no {name}, which this space samples")
        if not _contains(dimension, value):
            raise OutsideSpace(f"space.{name} does not allow {value!r}")
        if not isinstance(dimension, Fixed):
            params[name] = value
        return value

    build_params(take, space, epochs)
    return params


def recipe_trials(
    space: SpaceConfig, epochs: int
) -> tuple[list[tuple[Recipe, dict[str, Any]]], list[str]]:
    """The recipes this space can express, as Optuna params to enqueue, and why others can't run.

    Returns (runnable, skipped): runnable pairs a recipe with the params to enqueue
    (fixed dimensions left out); skipped holds one line per recipe the space excludes.
    A dimension a recipe does not name takes the space's nearest to its ``classic`` value
    (the notebooks' batch 32, no weight decay, none of the later tricks), else the space's
    first value (the arch).
    """
    unnamed = {
        name: _first(getattr(space, name))
        if info.classic is None
        else _nearest(getattr(space, name), info.classic)
        for name, info in DIMENSIONS.items()
    }
    runnable, skipped = [], []
    for recipe in RECIPES:
        try:
            runnable.append((recipe, replay(unnamed | recipe.params, space, epochs)))
        except OutsideSpace as exc:
            skipped.append(f"{recipe.name} skipped: {exc}")
    return runnable, skipped


def _contains(dimension: Dimension, value: Any) -> bool:
    if isinstance(dimension, Fixed):
        return dimension.value == value
    if isinstance(dimension, Choice):
        return value in dimension.values
    if isinstance(value, (str, bool)):
        return False
    if isinstance(dimension, IntRange):
        return value in _grid(dimension)  # Optuna samples only the grid's points
    return dimension.low <= value <= dimension.high


def _first(dimension: Dimension) -> Any:
    if isinstance(dimension, Fixed):
        return dimension.value
    if isinstance(dimension, Choice):
        return dimension.values[0]
    return dimension.low


def _nearest(dimension: Dimension, target: float) -> Any:
    if isinstance(dimension, Fixed):
        return dimension.value
    if isinstance(dimension, Choice):
        numbers = [v for v in dimension.values if isinstance(v, (int, float))]
        return min(numbers, key=lambda v: abs(v - target)) if numbers else dimension.values[0]
    if isinstance(dimension, IntRange):
        return min(_grid(dimension), key=lambda v: abs(v - target))
    return min(max(target, dimension.low), dimension.high)


def _grid(dimension: IntRange) -> range:
    return range(dimension.low, dimension.high + 1, dimension.step)
