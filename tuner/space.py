"""The search space: turn an Optuna trial into a TrialParams, the classic recipes, and
``describe_schedule`` to say a recipe in words."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import optuna

from tuner.config import NEVER, Choice, Dimension, Fixed, IntRange, SpaceConfig
from tuner.model import STAGES


@dataclass(frozen=True)
class TrialParams:
    """One fine-tuning recipe, as sampled for a trial.

    Attributes:
        freeze_depth: how many leading backbone stages (stem, layer1..layer4) start frozen.
        unfreeze_epoch: 0-based epoch at whose start the frozen stages begin to unfreeze,
            or None to keep them frozen for the whole run.
        unfreeze_mode: "all" unfreezes every frozen stage at once; "progressive" one stage
            per epoch, deepest first.
        head_lr: learning rate of the new classification head.
        backbone_lr: learning rate of every backbone stage that trains; None when no
            backbone stage ever trains (feature extraction).
        optimizer: "sgd" (momentum 0.9), "adam" or "adamw".
        batch_size: training batch size.
        weight_decay: weight decay for every parameter group.
    """

    freeze_depth: int
    unfreeze_epoch: int | None
    unfreeze_mode: str
    head_lr: float
    backbone_lr: float | None
    optimizer: str
    batch_size: int
    weight_decay: float


class Schedule(NamedTuple):
    """The part of a recipe that decides which stages train in which epoch."""

    freeze_depth: int
    unfreeze_epoch: int | None  # None: never unfreezes
    unfreeze_mode: str


def frozen_depth_at(schedule: Schedule | TrialParams, epoch: int) -> int:
    """How many leading stages are frozen during ``epoch`` (0-based).

    ``freeze_depth`` until ``unfreeze_epoch``; from then on 0 ("all"), or one stage fewer at
    the start of each epoch ("progressive", deepest frozen stage first): freeze_depth 3 with
    unfreeze_epoch 2 gives 3, 3, 2, 1, 0, 0, ...
    """
    if schedule.unfreeze_epoch is None or epoch < schedule.unfreeze_epoch:
        return schedule.freeze_depth
    if schedule.unfreeze_mode == "all":
        return 0
    if schedule.unfreeze_mode == "progressive":
        return max(0, schedule.freeze_depth - (epoch - schedule.unfreeze_epoch + 1))
    raise ValueError(f"unknown unfreeze_mode {schedule.unfreeze_mode!r}")


@dataclass(frozen=True)
class Recipe:
    """A classic fine-tuning recipe from the reference notebooks, run as an early trial."""

    name: str
    description: str
    params: dict[str, Any]

    @property
    def title(self) -> str:
        """The recipe's short name in words, e.g. "fine-tune from the start"."""
        return self.description.split(":", 1)[0]


RECIPES = (
    Recipe(
        "feature_extraction",
        "feature extraction: whole backbone frozen, head 1e-3 Adam",
        {"freeze_depth": 5, "unfreeze_epoch": NEVER, "head_lr": 1e-3, "optimizer": "adam"},
    ),
    Recipe(
        "early_unfreeze",
        "early unfreeze: backbone frozen, unfrozen at epoch 1 with lr 1e-4, head 1e-3 Adam",
        {
            "freeze_depth": 5,
            "unfreeze_epoch": 1,
            "unfreeze_mode": "all",
            "head_lr": 1e-3,
            "backbone_lr": 1e-4,
            "optimizer": "adam",
        },
    ),
    Recipe(
        "fine_tune",
        "fine-tune from the start: nothing frozen, backbone 1e-4, head 1e-3 Adam",
        {"freeze_depth": 0, "head_lr": 1e-3, "backbone_lr": 1e-4, "optimizer": "adam"},
    ),
)

# The notebooks train with batch 32 and no weight decay: the recipes take the nearest legal values.
_RECIPE_DEFAULTS = {"batch_size": 32, "weight_decay": 0.0}


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


_OPTIMIZER_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}


def describe_schedule(params: TrialParams, epochs: int) -> str:
    """One line saying a recipe in words, for model cards, summaries and the dashboard.

    ``epochs`` is the run's length: epochs are numbered from 0, as ``unfreeze_epoch`` is, and
    a progressive unfreeze that has not reached the stem by the last epoch says what stays
    frozen. E.g. "stem+layer1-2 frozen, all unfrozen at epoch 2 of 0..3; head lr 3e-3,
    backbone lr 1e-4, AdamW, batch 64, weight decay 1e-5".
    """
    rates = f"head lr {_compact(params.head_lr)}"
    if params.backbone_lr is not None:
        rates += f", backbone lr {_compact(params.backbone_lr)}"
    optimizer = _OPTIMIZER_NAMES.get(params.optimizer, params.optimizer)
    return (
        f"{describe_freezing(params, epochs)}; {rates}, {optimizer}, batch {params.batch_size}, "
        f"weight decay {_compact(params.weight_decay)}"
    )


def describe_freezing(params: TrialParams, epochs: int) -> str:
    """The freeze/unfreeze half of ``describe_schedule``: the column of a results table."""
    depth, start = params.freeze_depth, params.unfreeze_epoch
    if depth == 0:
        return "nothing frozen"
    if start is None:
        return f"{_stage_span(depth)} frozen throughout"
    if params.unfreeze_mode == "all" or depth == 1:
        return f"{_stage_span(depth)} frozen, all unfrozen at epoch {start} of 0..{epochs - 1}"
    freezing = (
        f"{_stage_span(depth)} frozen, unfrozen one stage per epoch from epoch {start} "
        f"of 0..{epochs - 1}, deepest first"
    )
    still_frozen = depth - (epochs - start)
    if still_frozen > 0:
        freezing += f" ({_stage_span(still_frozen)} still frozen at the end)"
    return freezing


def _stage_span(depth: int) -> str:
    """The first ``depth`` stages in few words: "stem", "stem+layer1", "stem+layer1-3"."""
    if depth >= len(STAGES):
        return "whole backbone"
    names = STAGES[:depth]
    if len(names) <= 2:
        return "+".join(names)
    return f"{names[0]}+{names[1]}-{names[-1].removeprefix('layer')}"


def _compact(value: float) -> str:
    """3e-3, 2.5e-4: learning rates and decays the way the recipes are written."""
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


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
