"""optim.py: weight decay on weights only, in the groups every stage joins with."""

from __future__ import annotations

import dataclasses

from torch import nn

from tests.engine.test_train import PARAMS, _model
from tuner.engine.optim import make_optimizer, unfreeze


def _decay_of(optimizer) -> dict[int, float]:
    return {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}


def _is_norm_or_bias(model: nn.Module) -> dict[int, bool]:
    norms = {
        id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()
    }
    return {id(p): id(p) in norms or name.endswith("bias") for name, p in model.named_parameters()}


def test_norm_and_bias_parameters_get_no_weight_decay_also_after_unfreezing() -> None:
    model = _model()
    params = dataclasses.replace(PARAMS, weight_decay=0.05, freeze_depth=3, unfreeze_epoch=1)
    optimizer = make_optimizer(model, params, frozen_depth=3)
    unfreeze(model, optimizer, params, depth=3, new=0, epoch=1)
    decay, plain = _decay_of(optimizer), _is_norm_or_bias(model)
    assert decay.keys() == plain.keys()  # every parameter trains, each in one group
    for key, is_plain in plain.items():
        assert decay[key] == (0.0 if is_plain else 0.05)
    assert sum(plain.values()) > 30 and not all(plain.values())  # both kinds are there
    head = [g for g in optimizer.param_groups if g["stage"] == "head"]
    assert [g["weight_decay"] for g in head] == [0.05, 0.0]  # fc.weight, then fc.bias
