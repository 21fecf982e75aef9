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
    # folder of the torchvision datasets, relative to where tuner runs: beside the project
    root: str = setting("data")
    # folder of an image-folder tree; none: only the folder source reads one
    path: str | None = setting(None, kind=str)
    # let torchvision fetch a missing dataset; off: never touch the network unasked
    download: bool = setting(False, per_run=True)
    # class names kept, in this order; none: all of the source's
    classes: tuple[str, ...] | None = setting(None, kind=tuple, parse=parse_classes)
    # images per class at most (a seeded sample); none: every image
    per_class: int | None = setting(None, kind=int, low=1)
    # new class -> the old classes merged into it; none: the source's own classes
    relabel: tuple[tuple[str, tuple[str, ...]], ...] | None = setting(
        None, kind=tuple, parse=parse_relabel
    )
    # holdout (a split of the training data) or test (the source's test split); holdout keeps
    # the test split unseen until the final estimate
    val_source: str = setting("holdout", choices=("holdout", "test"))
    # share of each class held out for validation; 0.2: the usual 80/20 split
    val_fraction: float = setting(0.2, low=0.01, high=0.9)
    # one of TEST_SOURCES; auto: the source's own test split where validation leaves it unused,
    # else a holdout, so every study has an honest final estimate
    test_source: str = setting("auto", choices=TEST_SOURCES)
    # share of each class held out for test where it is a holdout; 0.2, as validation's
    test_fraction: float = setting(0.2, low=0.01, high=0.9)
    # seed of the splits and the per-class sample: one split for every trial and worker
    split_seed: int = setting(0)
    # pixels, the side of the square images are resized and cropped to; 32: a ResNet's 32x
    # downsampling leaves one pixel, enough for the 8x8 digits and cheap on a CPU
    image_size: int = setting(32, low=8, high=1024)
    # one of AUGMENTATIONS, batched on the device; flip: the cheapest (none where mirroring
    # changes the class)
    augment: str = setting("flip", choices=AUGMENTATIONS)
    # auto: inverse class frequencies weight the loss; none: the built-in sources are balanced
    class_weights: str = setting("none", choices=("none", "auto"))
    # skip unreadable image files; off: a broken file is shown, never silently dropped
    skip_bad_images: bool = setting(False)
    # folder of the prepared images on this host (none: a temporary one); beside the project
    cache_dir: str = setting("tuner-cache", per_run=True)
    # processes decoding images into the cache; 0: one per CPU core of the host (same bytes
    # whatever the number)
    prepare_workers: int = setting(0, low=0, per_run=True)


@dataclass(frozen=True)
class ModelConfig:
    """Which starting weights each ResNet of ``space.arch`` gets (auto, imagenet, none, a file)."""

    # auto, imagenet, none or a file; auto: ImageNet weights where they load, else random init
    # with a loud warning, so an offline machine still runs
    weights: str = setting("auto")


@dataclass(frozen=True)
class TrainConfig:
    """Settings fixed for every trial of a study."""

    # epochs per trial; 4: room to unfreeze at epoch 1 or 2 and train after, yet seconds a trial
    epochs: int = setting(4, low=1, high=1000)
    # per-epoch schedule of every rate; cosine: no knob of its own, the common fine-tuning choice
    lr_schedule: str = setting("cosine", choices=LR_SCHEDULES)
    # epochs between the step schedule's drops (step only); 2: one drop in a 4-epoch run
    lr_step_epochs: int = setting(2, low=1)
    # factor of each step drop; 0.1: the classic ten-fold drop
    lr_step_gamma: float = setting(0.1, low=1e-6, high=1.0)
    # largest gradient norm; none: no clipping, which small fine-tuning rates seldom need
    grad_clip: float | None = setting(None, kind=float, low=1e-9)
    # auto (CUDA when available), cpu, cuda or cuda:N: a property of the host, not the study
    device: str = setting("auto", per_run=True)
    # auto/bf16: bf16 autocast on CUDA (no loss scaling needed); off: float32 throughout
    amp: str = setting("auto", choices=AMP_MODES)
    # seed of the model's start (its new head); trial n trains with seed + n
    seed: int = setting(0)
    # images per validation step; 256: no gradients are kept, so it can exceed training's
    eval_batch_size: int = setting(256, low=1)
    # MiB on the training device for frozen stages' outputs, per worker on the CPU and per
    # GPU on a GPU (its --per-gpu workers divide it); 0: off; 1 GiB is small beside either
    feature_cache_mb: int = setting(1024, low=0, per_run=True)
    # auto, always or never resident on the device; auto: resident where it fits, else streamed
    data_on_device: str = setting("auto", choices=DATA_ON_DEVICE, per_run=True)
    # share of the device's free memory resident data may take; half leaves the rest to the
    # model, its activations and the feature cache
    data_on_device_share: float = setting(0.5, low=0.0, high=1.0, per_run=True)


def _row(name: str) -> dict[str, Any]:
    """A ``space`` field's arguments: the default and rule of its row of ``recipe.DIMENSIONS``."""
    info = DIMENSIONS[name]
    return {"default": info.default, "metadata": dimension_rule(info.rule)}


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

    # the study's name in the storage; a config file's name when the file gives none
    study: str = setting("default")
    # finished trials the study ends with; 50: well past TPE's 8 random start-up trials
    trials: int = setting(50, low=1, per_run=True)
    # tpe or random; tpe learns from the finished trials
    sampler: str = setting("tpe", choices=SAMPLERS)
    # sampler seed; each worker's derives from it, the study name and the worker id
    seed: int = setting(0)
    # one of PRUNERS; asha: asynchronous, so parallel workers never wait on each other
    pruner: str = setting("asha", choices=PRUNERS)
    # judge trials only against trials frozen alike so far; on: an unfreezing trial's first
    # epochs would lose to a full fine-tune's
    prune_after_unfreeze: bool = setting(True)
    # enqueue the classic recipes first; on: the search says what it gained over them
    baselines: bool = setting(True)
    # top trials whose best-epoch weights are kept; 3: what the default soup (top 3) reads
    keep_checkpoints: int = setting(3, low=1)
    # top trials re-run on fresh seeds once the budget is met, the best mean handed back; 3:
    # a trial's value is its luckiest epoch, and the replay showed that judging the top 3
    # again beats the search's best value (bench/RESULTS.md, "Replay"); 0 turns it off
    confirm_top: int = setting(3, low=0, per_run=True)
    # fresh seeds per confirmed trial; 2: the replay's choice, 6 full runs for the top 3
    confirm_seeds: int = setting(2, low=1, per_run=True)
    # failed trials in a row before every worker stops; 5: a broken setup stops fast, one
    # unlucky trial does not
    max_consecutive_failures: int = setting(5, low=1, per_run=True)
    # seconds between a running trial's signs of life
    heartbeat_seconds: int = setting(10, low=1, per_run=True)
    # seconds without a heartbeat before a trial is failed and retried; 60: six heartbeats
    grace_seconds: int = setting(60, low=1, per_run=True)
    # times a trial whose worker died is retried; 2: a flaky host is survived, a trial that
    # kills its worker is not retried forever
    max_retries: int = setting(2, low=0, per_run=True)
    # checkpoint every epoch so a retried trial continues; on: a retry loses at most an epoch
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
