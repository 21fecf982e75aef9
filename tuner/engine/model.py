"""Build a torchvision ResNet from resolved starting weights; its stages and how to freeze them."""

from __future__ import annotations

import torchvision
from torch import nn

from tuner.engine.weights import ResolvedWeights, backbone_state, check_arch
from tuner.recipe import STAGES


def build_model(arch: str, num_classes: int, weights: ResolvedWeights) -> nn.Module:
    """A ResNet with the recorded backbone weights and a fresh ``num_classes`` head.

    The head (``fc``) is always new: an ``fc`` in the weights file is ignored. Raises TunerError
    when the recorded weights cannot be loaded now or their file changed since they were
    recorded (sha256 differs): a study never silently mixes starting points. Random init (and the
    new head) draw from torch's global RNG, so seed it first for a reproducible model.
    """
    check_arch(arch)
    model = torchvision.models.get_model(arch, weights=None)
    if weights.kind != "none":
        model.load_state_dict(backbone_state(weights, arch, model.state_dict()), strict=False)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def stage_modules(model: nn.Module) -> list[nn.Module]:
    """The modules of each stage; index i is STAGES[i] (the stem is conv1 and bn1)."""
    stem = nn.ModuleList([model.conv1, model.bn1])
    return [stem, *(getattr(model, name) for name in STAGES[1:])]


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    return list(model.fc.parameters())


def stage_parameters(model: nn.Module, stage_index: int) -> list[nn.Parameter]:
    return list(stage_modules(model)[stage_index].parameters())


def set_frozen(model: nn.Module, frozen_depth: int) -> None:
    """Stop gradients for stages [0, frozen_depth); every later stage and the head train."""
    if not 0 <= frozen_depth <= len(STAGES):
        raise ValueError(f"frozen_depth must be in 0..{len(STAGES)}, got {frozen_depth}")
    for index, stage in enumerate(stage_modules(model)):
        stage.requires_grad_(index >= frozen_depth)
    model.fc.requires_grad_(True)


def set_train_mode(model: nn.Module, frozen_depth: int, bn_policy: str = "train") -> None:
    """Training mode, but frozen stages stay in eval so their BatchNorm running stats stay put;
    with ``bn_policy`` "freeze_stats" every BatchNorm does (its scale and shift still learn)."""
    model.train()
    for stage in stage_modules(model)[:frozen_depth]:
        stage.eval()
    if bn_policy == "freeze_stats":
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
