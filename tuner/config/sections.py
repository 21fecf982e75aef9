"""The five sections of a study config and their keys, each with its default and rule."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from tuner.config.dimensions import Choice, Dimension, Fixed, FloatRange, IntRange
from tuner.config.rules import dimension_rule, parse_classes, parse_relabel, setting
from tuner.config.sources import DATA_SOURCES
from tuner.recipe import BN_POLICIES, NEVER, OPTIMIZERS, STAGES, UNFREEZE_MODES

AUGMENTATIONS = ("none", "flip", "crop_flip", "crop_flip_jitter")
LR_SCHEDULES = ("none", "cosine", "step")
PRUNERS = ("asha", "hyperband", "median", "successive_halving", "none")  # search.pruners.PRUNERS
SAMPLERS = ("tpe", "random")
AMP_MODES = ("auto", "bf16", "off")
DATA_ON_DEVICE = ("auto", "always", "never")
TEST_SOURCES = ("auto", "holdout", "none")
ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


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


@dataclass(frozen=True)
class SpaceConfig:
    """The search space: each dimension a range, a list of choices or a fixed value."""

    freeze_depth: Dimension = field(
        default=IntRange(0, len(STAGES)), metadata=dimension_rule(int, low=0, high=len(STAGES))
    )
    unfreeze_epoch: Dimension = field(
        default=Choice((NEVER, 1, 2)), metadata=dimension_rule(int, low=1, also=(NEVER,))
    )
    unfreeze_mode: Dimension = field(
        default=Choice(UNFREEZE_MODES), metadata=dimension_rule(str, choices=UNFREEZE_MODES)
    )
    head_lr: Dimension = field(
        default=FloatRange(1e-4, 3e-2, log=True),
        metadata=dimension_rule(float, low=1e-9, high=10.0),
    )
    backbone_lr: Dimension = field(
        default=FloatRange(1e-5, 3e-3, log=True),
        metadata=dimension_rule(float, low=1e-9, high=10.0),
    )
    optimizer: Dimension = field(
        default=Choice(tuple(OPTIMIZERS)), metadata=dimension_rule(str, choices=tuple(OPTIMIZERS))
    )
    batch_size: Dimension = field(
        default=Choice((32, 64, 128)), metadata=dimension_rule(int, low=1, high=65536)
    )
    weight_decay: Dimension = field(
        default=FloatRange(1e-6, 1e-2, log=True), metadata=dimension_rule(float, low=0.0, high=1.0)
    )
    arch: Dimension = field(default=Fixed("resnet18"), metadata=dimension_rule(str, choices=ARCHS))
    layer_decay: Dimension = field(
        default=FloatRange(0.5, 1.0), metadata=dimension_rule(float, low=0.01, high=1.0)
    )
    warmup_epochs: Dimension = field(default=Choice((0, 1)), metadata=dimension_rule(int, low=0))
    label_smoothing: Dimension = field(
        default=Choice((0.0, 0.1)), metadata=dimension_rule(float, low=0.0, high=0.99)
    )
    mixup: Dimension = field(default=Fixed(0.0), metadata=dimension_rule(float, low=0.0, high=10.0))
    cutmix: Dimension = field(
        default=Fixed(0.0), metadata=dimension_rule(float, low=0.0, high=10.0)
    )
    ema: Dimension = field(
        default=Choice((0.0, 0.99)), metadata=dimension_rule(float, low=0.0, high=0.9999)
    )
    bn_policy: Dimension = field(
        default=Fixed("train"), metadata=dimension_rule(str, choices=BN_POLICIES)
    )


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
