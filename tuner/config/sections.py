"""The five sections of a study config and their keys, each with its default and rule."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tuner.config.rules import dimension_rule, parse_classes, parse_relabel, setting
from tuner.config.sources import DATA_SOURCES
from tuner.dimensions import Dimension
from tuner.recipe import DIMENSIONS

AUGMENTATIONS = ("none", "flip", "crop_flip", "crop_flip_jitter")
LR_SCHEDULES = ("none", "cosine", "step")
PRUNERS = ("asha", "hyperband", "median", "successive_halving", "none")  # search.pruners.PRUNERS
SAMPLERS = ("tpe", "random")
AMP_MODES = ("auto", "bf16", "off")
DATA_ON_DEVICE = ("auto", "always", "never")
TEST_SOURCES = ("auto", "holdout", "none")


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are split, sized and augmented."""

    source: str = setting("digits", choices=tuple(DATA_SOURCES))
    root: str = setting("data")
    path: str | None = setting(None, kind=str)
    download: bool = setting(False, per_run=True)
    classes: tuple[str, ...] | None = setting(None, kind=tuple, parse=parse_classes)
    per_class: int | None = setting(None, kind=int, low=1)
    relabel: tuple[tuple[str, tuple[str, ...]], ...] | None = setting(
        None, kind=tuple, parse=parse_relabel
    )
    val_source: str = setting("holdout", choices=("holdout", "test"))
    val_fraction: float = setting(0.2, low=0.01, high=0.9)
    test_source: str = setting("auto", choices=TEST_SOURCES)
    test_fraction: float = setting(0.2, low=0.01, high=0.9)
    split_seed: int = setting(0)
    image_size: int = setting(32, low=8, high=1024)
    augment: str = setting("flip", choices=AUGMENTATIONS)
    class_weights: str = setting("none", choices=("none", "auto"))
    skip_bad_images: bool = setting(False)
    cache_dir: str = setting("tuner-cache", per_run=True)
    prepare_workers: int = setting(0, low=0, per_run=True)  # 0: one per CPU core of the host


@dataclass(frozen=True)
class ModelConfig:
    """Which starting weights each ResNet of ``space.arch`` gets (auto, imagenet, none, a file)."""

    weights: str = setting("auto")


@dataclass(frozen=True)
class TrainConfig:
    """Settings fixed for every trial of a study."""

    epochs: int = setting(4, low=1, high=1000)
    lr_schedule: str = setting("cosine", choices=LR_SCHEDULES)
    lr_step_epochs: int = setting(2, low=1)
    lr_step_gamma: float = setting(0.1, low=1e-6, high=1.0)
    grad_clip: float | None = setting(None, kind=float, low=1e-9)
    device: str = setting("auto", per_run=True)
    amp: str = setting("auto", choices=AMP_MODES)
    seed: int = setting(0)
    eval_batch_size: int = setting(256, low=1)
    feature_cache_mb: int = setting(1024, low=0, per_run=True)
    data_on_device: str = setting("auto", choices=DATA_ON_DEVICE, per_run=True)
    data_on_device_share: float = setting(0.5, low=0.0, high=1.0, per_run=True)


def _row(name: str) -> dict[str, Any]:
    """A ``space`` field's arguments: the default and rule of its row of ``recipe.DIMENSIONS``."""
    info = DIMENSIONS[name]
    rule = dimension_rule(
        info.kind, low=info.low, high=info.high, choices=info.choices, also=info.also
    )
    return {"default": info.default, "metadata": rule}


@dataclass(frozen=True)
class SpaceConfig:
    """The search space: each dimension a range, a list of choices or a fixed value.

    One field per row of ``recipe.DIMENSIONS``, in its order (a test checks it): the row holds
    the default, with its unit and why, and the rule.
    """

    freeze_depth: Dimension = field(**_row("freeze_depth"))
    unfreeze_epoch: Dimension = field(**_row("unfreeze_epoch"))
    unfreeze_mode: Dimension = field(**_row("unfreeze_mode"))
    head_lr: Dimension = field(**_row("head_lr"))
    backbone_lr: Dimension = field(**_row("backbone_lr"))
    optimizer: Dimension = field(**_row("optimizer"))
    batch_size: Dimension = field(**_row("batch_size"))
    weight_decay: Dimension = field(**_row("weight_decay"))
    arch: Dimension = field(**_row("arch"))
    layer_decay: Dimension = field(**_row("layer_decay"))
    warmup_epochs: Dimension = field(**_row("warmup_epochs"))
    label_smoothing: Dimension = field(**_row("label_smoothing"))
    mixup: Dimension = field(**_row("mixup"))
    cutmix: Dimension = field(**_row("cutmix"))
    ema: Dimension = field(**_row("ema"))
    bn_policy: Dimension = field(**_row("bn_policy"))


@dataclass(frozen=True)
class SearchConfig:
    """How the study searches: name, budget, sampler, pruner, baselines, kept checkpoints."""

    study: str = setting("default")
    trials: int = setting(50, low=1, per_run=True)
    sampler: str = setting("tpe", choices=SAMPLERS)
    seed: int = setting(0)
    pruner: str = setting("asha", choices=PRUNERS)
    prune_after_unfreeze: bool = setting(True)
    baselines: bool = setting(True)
    keep_checkpoints: int = setting(3, low=1)
    max_consecutive_failures: int = setting(5, low=1, per_run=True)
    heartbeat_seconds: int = setting(10, low=1, per_run=True)
    grace_seconds: int = setting(60, low=1, per_run=True)
    max_retries: int = setting(2, low=0, per_run=True)
    resume: bool = setting(True, per_run=True)


@dataclass(frozen=True)
class StudyConfig:
    """The whole resolved configuration of a study."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    search: SearchConfig = field(default_factory=SearchConfig)


# Section name -> its dataclass, in StudyConfig's order (the order messages list them in).
SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(StudyConfig)}
