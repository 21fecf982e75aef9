"""What a trial's recipe is: TrialParams, its freeze Schedule, the classic recipes, and
``describe_schedule`` to say a recipe in words. Plain data: neither torch nor optuna."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

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
    """The recipe's tricks beyond freezing and rates, in words; those left at "off" unsaid."""
    extras = []
    if params.layer_decay != 1.0 and params.backbone_lr is not None:
        extras.append(f"layer decay {params.layer_decay:.2g}")
    if params.warmup_epochs:
        extras.append(f"{params.warmup_epochs}-epoch warm-up")
    if params.label_smoothing:
        extras.append(f"label smoothing {params.label_smoothing:.2g}")
    if params.mixup:
        extras.append(f"mixup {params.mixup:.2g}")
    if params.cutmix:
        extras.append(f"cutmix {params.cutmix:.2g}")
    if params.ema:
        extras.append(f"EMA {params.ema:.4g}")
    if params.bn_policy == "freeze_stats" and params.backbone_lr is not None:
        extras.append("BatchNorm statistics kept pretrained")
    return extras


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
