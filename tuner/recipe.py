"""What a trial's recipe is: TrialParams, the one table of its search dimensions, its freeze
Schedule, the classic recipes, and ``describe_schedule`` to say a recipe in words. Plain data:
neither torch nor optuna."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from tuner.dimensions import Choice, Dimension, Fixed, FloatRange, IntRange, Rule

NEVER = "never"
"""The ``unfreeze_epoch`` value meaning: the frozen stages stay frozen for the whole run."""

UNFREEZE_MODES = ("all", "progressive")

BN_POLICIES = ("train", "freeze_stats")
"""``bn_policy``: BatchNorm of trainable stages updates its running statistics ("train"), or
keeps the pretrained ones while its scale and shift still learn ("freeze_stats")."""


@dataclass(frozen=True)
class OptimizerInfo:
    """One optimizer choice: its config name, its name in words, and how torch builds it.

    The one table of optimizers: config validates against its names, the engine builds
    ``torch.optim.<torch_class>(groups, **defaults)``, descriptions use ``title``.
    """

    name: str
    title: str
    torch_class: str
    defaults: tuple[tuple[str, Any], ...] = ()


OPTIMIZERS: dict[str, OptimizerInfo] = {
    info.name: info
    for info in (
        OptimizerInfo("sgd", "SGD", "SGD", (("momentum", 0.9),)),
        OptimizerInfo("adam", "Adam", "Adam"),
        OptimizerInfo("adamw", "AdamW", "AdamW"),
    )
}

STAGES: tuple[str, ...] = ("stem", "layer1", "layer2", "layer3", "layer4")
"""The backbone stages in input-to-output order; ``freeze_depth`` counts from the stem."""

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
"""The torchvision ResNets a recipe may fine-tune (``arch``)."""


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
        weight_decay: weight decay of the weights (norm and bias parameters get none).
        arch: the torchvision ResNet, e.g. "resnet18".
        layer_decay: stage lr = backbone_lr * layer_decay ** k, k = stages between it and the
            head (layer4: 0, stem: 4); 1.0 gives every stage backbone_lr.
        warmup_epochs: epochs over which each group's lr ramps up linearly from when it
            starts training (the first epoch, or its unfreeze epoch); 0: no warm-up.
        label_smoothing: of the cross-entropy targets.
        mixup: alpha of the Beta(alpha, alpha) mixing weight of mixup; 0: off.
        cutmix: alpha of cutmix's mixing weight (the pasted box's area); 0: off. With both on
            each batch uses one of the two, chosen with equal odds.
        ema: decay of an exponential moving average of the weights, evaluated and exported
            instead of the raw weights; 0: off.
        bn_policy: one of BN_POLICIES, for the BatchNorm layers of the stages that train.
    """

    freeze_depth: int
    unfreeze_epoch: int | None
    unfreeze_mode: str
    head_lr: float
    backbone_lr: float | None
    optimizer: str
    batch_size: int
    weight_decay: float
    arch: str = "resnet18"
    layer_decay: float = 1.0
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    ema: float = 0.0
    bn_policy: str = "train"

    @property
    def mixes(self) -> bool:
        """Whether training batches are mixed (mixup or cutmix): images, never cached features."""
        return self.mixup > 0 or self.cutmix > 0


@dataclass(frozen=True)
class DimensionInfo:
    """One search dimension: the row that every place naming the dimensions reads.

    The config's ``space`` section takes its keys, defaults and rules from :data:`DIMENSIONS`,
    sampling asks for every name in it (only the conditions are code), the classic recipes
    fill what they leave unnamed from ``classic``, descriptions say ``words``, the report's
    figures draw one axis per row, and older studies read a later row as ``stored_before``.

    Attributes:
        name: the ``space`` key, the TrialParams field and the Optuna param, one spelling.
        rule: what its fixed value, choices and range ends must be (type, bounds, choices,
            literals such as ``never``), as the config checks them.
        default: what the built-in study searches, or fixes it at.
        classic: the value a classic recipe takes when it does not name it (the space's
            nearest); also the "off" value ``words`` leave unsaid. None: the space's first.
        words: how a value other than ``classic`` is said ("EMA {:.4g}"); None: said by
            :func:`describe_schedule`'s own sentence, or not at all.
        log_axis: drawn on a log scale in the report's figures.
        stored_before: the value that a study stored before the dimension existed reads it
            as, what that study did then; None: it existed from the start. A row added with a
            searched default and no ``stored_before`` would make old studies search it.
    """

    name: str
    rule: Rule
    default: Dimension
    classic: Any = None
    words: str | None = None
    log_axis: bool = False
    stored_before: Any = None


def _dimension(
    name: str, kind: type, default: Dimension, *, classic: Any = None, log_axis: bool = False,
    stored_before: Any = None, **rule: Any,
) -> DimensionInfo:  # fmt: skip
    """A row whose values are of ``kind`` within ``rule`` (low, high, choices, also)."""
    return DimensionInfo(name, Rule(kind, **rule), default, classic, None, log_axis, stored_before)


def _trick(
    name: str, kind: type, default: Dimension, off: Any, words: str, **rule: Any
) -> DimensionInfo:
    """A recipe trick beyond freezing and rates, added after the first studies were stored:
    ``off`` is what the classic recipes take, what those studies read it as, and what its
    words leave unsaid; ``rule`` its bounds or choices."""
    return DimensionInfo(name, Rule(kind, **rule), default, off, words, stored_before=off)


# Each row: the unit, and why the built-in study's default is what it is.
DIMENSIONS: dict[str, DimensionInfo] = {
    info.name: info
    for info in (
        # stages frozen at the start: every depth, 0 (full fine-tuning) to 5 (feature extraction)
        _dimension("freeze_depth", int, IntRange(0, len(STAGES)), low=0, high=len(STAGES)),
        # 0-based epoch, or never (epoch 0 would freeze nothing); 1 and 2 leave the default
        # 4-epoch run 2 or 3 epochs to train what they unfreeze
        _dimension("unfreeze_epoch", int, Choice((NEVER, 1, 2)), low=1, also=(NEVER,)),
        # both ways, all at once or one stage per epoch (deepest first)
        _dimension("unfreeze_mode", str, Choice(UNFREEZE_MODES), choices=UNFREEZE_MODES),
        # per-step learning rate; log-uniform over a decade and more around the notebooks' 1e-3
        _dimension(
            "head_lr", float, FloatRange(1e-4, 3e-2, log=True), low=1e-9, high=10.0, log_axis=True
        ),
        # per-step learning rate, a decade below the head's: pretrained stages need smaller
        # steps than a new head (the notebooks' 1e-4 sits inside)
        _dimension(
            "backbone_lr",
            float,
            FloatRange(1e-5, 3e-3, log=True),
            low=1e-9,
            high=10.0,
            log_axis=True,
        ),
        # every optimizer of OPTIMIZERS
        _dimension("optimizer", str, Choice(tuple(OPTIMIZERS)), choices=tuple(OPTIMIZERS)),
        # images per step: the notebooks' 32 and two larger powers of two
        _dimension("batch_size", int, Choice((32, 64, 128)), low=1, high=65536, classic=32),
        # decay coefficient of the weights; log-uniform 1e-6..1e-2; the recipes take the
        # space's nearest to the notebooks' 0
        _dimension(
            "weight_decay",
            float,
            FloatRange(1e-6, 1e-2, log=True),
            low=0.0,
            high=1.0,
            classic=0.0,
            log_axis=True,
        ),
        # a torchvision ResNet; fixed at ResNet-18, the cheapest (searching archs multiplies a
        # search's cost; studies/cifar10.yaml searches three)
        _dimension("arch", str, Fixed("resnet18"), choices=ARCHS, stored_before="resnet18"),
        # lr factor per stage away from the head; 0.5..1.0 holds the 0.65..0.9 timm's recipes
        # use; 1.0: off
        _trick(
            "layer_decay",
            float,
            FloatRange(0.5, 1.0),
            1.0,
            "layer decay {:.2g}",
            low=0.01,
            high=1.0,
        ),
        # epochs of linear warm-up; 0 or 1: a 4-epoch run has no room for more
        _trick("warmup_epochs", int, Choice((0, 1)), 0, "{}-epoch warm-up", low=0),
        # share of the target spread over all classes; 0.1 is the usual value (Inception, timm)
        _trick(
            "label_smoothing",
            float,
            Choice((0.0, 0.1)),
            0.0,
            "label smoothing {:.2g}",
            low=0.0,
            high=0.99,
        ),
        # alpha of the Beta(alpha, alpha) mixing weight; off: blended batches pay back only
        # over long runs (bench/RESULTS.md)
        _trick("mixup", float, Fixed(0.0), 0.0, "mixup {:.2g}", low=0.0, high=10.0),
        # alpha of the pasted box's area; off, as mixup
        _trick("cutmix", float, Fixed(0.0), 0.0, "cutmix {:.2g}", low=0.0, high=10.0),
        # decay per step of the weights' average; 0.99 averages about the last 100 steps,
        # what a short run has; 0: off
        _trick("ema", float, Choice((0.0, 0.99)), 0.0, "EMA {:.4g}", low=0.0, high=0.9999),
        # fixed "train", what model.train() does; freeze_stats helps small batches
        _trick(
            "bn_policy",
            str,
            Fixed("train"),
            "train",
            "BatchNorm statistics kept pretrained",
            choices=BN_POLICIES,
        ),
    )
}
"""The search dimensions of a recipe, in TrialParams' order: one row per dimension."""


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


def describe_schedule(params: TrialParams, epochs: int) -> str:
    """One line saying a recipe in words, for model cards, summaries and the dashboard.

    ``epochs`` is the run's length: epochs are numbered from 0, as ``unfreeze_epoch`` is, and
    a progressive unfreeze that has not reached the stem by the last epoch says what stays
    frozen. E.g. "stem+layer1-2 frozen, all unfrozen at epoch 2 of 0..3; head lr 3e-3,
    backbone lr 1e-4, AdamW, batch 64, weight decay 1e-5", then any of
    :func:`describe_extras` ("; layer decay 0.7, 1-epoch warm-up, EMA 0.999").
    """
    rates = f"head lr {_compact(params.head_lr)}"
    if params.backbone_lr is not None:
        rates += f", backbone lr {_compact(params.backbone_lr)}"
    info = OPTIMIZERS.get(params.optimizer)
    optimizer = info.title if info else params.optimizer
    text = (
        f"{describe_freezing(params, epochs)}; {rates}, {optimizer}, batch {params.batch_size}, "
        f"weight decay {_compact(params.weight_decay)}"
    )
    extras = describe_extras(params)
    return f"{text}; {', '.join(extras)}" if extras else text


def describe_extras(params: TrialParams) -> list[str]:
    """The recipe's tricks beyond freezing and rates, each in its dimension's ``words``; those
    at their classic, "off" value unsaid (so are layer decay and BatchNorm statistics where no
    backbone stage trains: sampling leaves them off there)."""
    return [
        info.words.format(getattr(params, name))
        for name, info in DIMENSIONS.items()
        if info.words is not None and getattr(params, name) != info.classic
    ]


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
