"""The optimizer of a fine-tuning run: named parameter groups, unfreezing into them, the schedule.

Two groups for the head and two per trainable backbone stage (``group["stage"]`` names it;
the head's is "head"): its weights with the trial's weight decay, and its normalisation and
bias parameters without any, as timm's ``param_groups_weight_decay`` and torchvision's
``norm_weight_decay=0`` do (decaying BatchNorm's scale and the biases only fights what they
fit). Each remembers its unscheduled ``base_lr`` (for a stage, ``backbone_lr`` times
``layer_decay`` to the power of its distance from the head, as timm's ``--layer-decay``) and
the epoch it ``joined``, from which its warm-up counts. Stages unfrozen later join through
``add_param_group``, so the existing groups keep their momentum or Adam moments.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tuner.config import TrainConfig
from tuner.engine.model import head_parameters, set_frozen, stage_parameters
from tuner.recipe import OPTIMIZERS, STAGES, TrialParams


def make_optimizer(
    model: nn.Module, params: TrialParams, frozen_depth: int
) -> torch.optim.Optimizer:
    """The head's groups, then each trainable stage's, deepest first."""
    if params.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {params.optimizer!r}")
    info = OPTIMIZERS[params.optimizer]
    groups = _groups(head_parameters(model), params.head_lr, "head", params.weight_decay, 0)
    for index in reversed(range(frozen_depth, len(STAGES))):
        groups += _stage_groups(model, index, params, 0)
    # fused: one kernel for the whole update, on CPU as on CUDA (torch picks it by default on
    # neither); on a 2-core CPU it cuts Adam's share of a ResNet-18 step from 40 to 9 ms
    return getattr(torch.optim, info.torch_class)(
        groups,
        lr=params.head_lr,
        weight_decay=params.weight_decay,
        fused=True,
        **dict(info.defaults),
    )


def unfreeze(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    params: TrialParams,
    depth: int,
    new: int,
    epoch: int,
) -> int:
    """Unfreeze down to ``new`` frozen stages at ``epoch``; they join the optimizer, deepest
    first. The existing groups keep their state (momentum, Adam moments). Returns the new depth.
    """
    if new < depth:
        set_frozen(model, new)
        for index in reversed(range(new, depth)):
            for group in _stage_groups(model, index, params, epoch):
                optimizer.add_param_group(group)
        return new
    return depth


def schedule_lr(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, epoch: int, warmup_epochs: int
) -> None:
    """Set every group's learning rate for ``epoch``: its base rate times :func:`lr_factor`,
    times its :func:`warmup_factor` counted from the epoch it joined."""
    factor = lr_factor(cfg.lr_schedule, epoch, cfg.epochs, cfg.lr_step_epochs, cfg.lr_step_gamma)
    for group in optimizer.param_groups:
        warmup = warmup_factor(epoch - group["joined"], warmup_epochs)
        group["lr"] = group["base_lr"] * factor * warmup


def warmup_factor(epochs_trained: int, warmup_epochs: int) -> float:
    """Linear warm-up: 1/(w+1), 2/(w+1), ... over a group's first ``warmup_epochs`` = w epochs.

    A stage that unfreezes late starts its own warm-up: fresh gradients through pretrained
    weights are largest then, which is what warm-up protects against.
    """
    if epochs_trained >= warmup_epochs:
        return 1.0
    return (epochs_trained + 1) / (warmup_epochs + 1)


def lr_factor(schedule: str, epoch: int, epochs: int, step_epochs: int, gamma: float) -> float:
    """The multiplier on every group's base learning rate during ``epoch`` (0-based).

    none: 1; cosine: 0.5 * (1 + cos(pi * epoch / epochs)), so the first epoch runs at the full
    rate and the last above zero; step: gamma ** (epoch // step_epochs).
    """
    if schedule == "none":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    if schedule == "step":
        return gamma ** (epoch // step_epochs)
    raise ValueError(f"unknown lr schedule {schedule!r}")


def stage_lr(params: TrialParams, stage_index: int) -> float:
    """``backbone_lr * layer_decay ** k``, k = how many stages lie between this one and the head."""
    if params.backbone_lr is None:
        raise ValueError(f"stage {STAGES[stage_index]} trains but backbone_lr is None")
    return params.backbone_lr * params.layer_decay ** (len(STAGES) - 1 - stage_index)


def _stage_groups(
    model: nn.Module, stage_index: int, params: TrialParams, epoch: int
) -> list[dict]:
    parameters = stage_parameters(model, stage_index)
    lr = stage_lr(params, stage_index)
    return _groups(parameters, lr, STAGES[stage_index], params.weight_decay, epoch)


def _groups(
    parameters: list[nn.Parameter], lr: float, stage: str, decay: float, epoch: int
) -> list[dict]:
    """A stage's (or the head's) groups: weights decayed, norm and bias parameters not.

    Convolution and linear weights have 2 or more dimensions; BatchNorm's scale and shift
    and every bias have one. Each group remembers its unscheduled lr (the schedule rewrites
    ``lr``).
    """
    weights = [p for p in parameters if p.ndim > 1]
    norms_and_biases = [p for p in parameters if p.ndim <= 1]
    return [
        {
            "params": group,
            "lr": lr,
            "base_lr": lr,
            "stage": stage,
            "weight_decay": wd,
            "joined": epoch,
        }
        for group, wd in ((weights, decay), (norms_and_biases, 0.0))
        if group
    ]
