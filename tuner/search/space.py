"""The search space in Optuna terms: sample a trial's recipe, enqueue the classic ones."""

from __future__ import annotations

from typing import Any

import optuna

from tuner.config import Choice, Dimension, Fixed, IntRange, SpaceConfig
from tuner.recipe import NEVER, RECIPES, STAGES, Recipe, TrialParams


def sample(trial: optuna.Trial, space: SpaceConfig) -> TrialParams:
    """Sample one recipe; conditional dimensions are asked only where they matter.

    ``unfreeze_epoch`` exists only when something is frozen, ``unfreeze_mode`` only when
    more than one stage unfreezes, ``backbone_lr`` only when some backbone stage trains.
    Fixed dimensions are not Optuna parameters; they are recorded in the study config.
    """
    freeze_depth = _suggest(trial, "freeze_depth", space.freeze_depth)
    unfreeze_epoch = None
    if freeze_depth > 0:
        value = _suggest(trial, "unfreeze_epoch", space.unfreeze_epoch)
        unfreeze_epoch = None if value == NEVER else int(value)
    unfreeze_mode = "all"
    if unfreeze_epoch is not None and freeze_depth > 1:
        unfreeze_mode = _suggest(trial, "unfreeze_mode", space.unfreeze_mode)
    backbone_trains = freeze_depth < len(STAGES) or unfreeze_epoch is not None
    return TrialParams(
        freeze_depth=freeze_depth,
        unfreeze_epoch=unfreeze_epoch,
        unfreeze_mode=unfreeze_mode,
        head_lr=_suggest(trial, "head_lr", space.head_lr),
        backbone_lr=_suggest(trial, "backbone_lr", space.backbone_lr) if backbone_trains else None,
        optimizer=_suggest(trial, "optimizer", space.optimizer),
        batch_size=_suggest(trial, "batch_size", space.batch_size),
        weight_decay=_suggest(trial, "weight_decay", space.weight_decay),
    )


def _suggest(trial: optuna.Trial, name: str, dimension: Dimension) -> Any:
    if isinstance(dimension, Fixed):
        return dimension.value
    if isinstance(dimension, Choice):
        return trial.suggest_categorical(name, dimension.values)
    if isinstance(dimension, IntRange):
        return trial.suggest_int(name, dimension.low, dimension.high, step=dimension.step)
    return trial.suggest_float(name, dimension.low, dimension.high, log=dimension.log)


# The notebooks train with batch 32 and no weight decay: the recipes take the nearest legal values.
_RECIPE_DEFAULTS = {"batch_size": 32, "weight_decay": 0.0}


def recipe_trials(space: SpaceConfig) -> tuple[list[tuple[Recipe, dict[str, Any]]], list[str]]:
    """The recipes this space can express, as Optuna params to enqueue, and why others can't run.

    Returns (runnable, skipped): runnable pairs a recipe with the params to enqueue
    (fixed dimensions left out); skipped holds one line per recipe the space excludes.
    """
    runnable, skipped = [], []
    for recipe in RECIPES:
        wanted = dict(recipe.params)
        for name, target in _RECIPE_DEFAULTS.items():
            wanted[name] = _nearest(getattr(space, name), target)
        params, problem = {}, None
        for name, value in wanted.items():
            dimension = getattr(space, name)
            if not _contains(dimension, value):
                problem = f"{recipe.name} skipped: space.{name} does not allow {value!r}"
                break
            if not isinstance(dimension, Fixed):
                params[name] = value
        if problem:
            skipped.append(problem)
        else:
            runnable.append((recipe, params))
    return runnable, skipped


def _contains(dimension: Dimension, value: Any) -> bool:
    if isinstance(dimension, Fixed):
        return dimension.value == value
    if isinstance(dimension, Choice):
        return value in dimension.values
    if isinstance(value, str):
        return False
    return dimension.low <= value <= dimension.high


def _nearest(dimension: Dimension, target: float) -> Any:
    if isinstance(dimension, Fixed):
        return dimension.value
    if isinstance(dimension, Choice):
        numbers = [v for v in dimension.values if isinstance(v, (int, float))]
        return min(numbers, key=lambda v: abs(v - target)) if numbers else dimension.values[0]
    return min(max(target, dimension.low), dimension.high)
