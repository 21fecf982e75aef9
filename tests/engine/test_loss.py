"""loss.py: PyTorch's cross-entropy values and gradients, without its host sync."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tuner.engine.loss import WeightedSmoothedCrossEntropy, make_loss

WEIGHT = torch.tensor([0.2, 1.5, 0.7, 3.0, 1.0])


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, class indices, class probabilities) of 7 samples over 5 classes."""
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(7, 5, generator=generator)
    labels = torch.randint(0, 5, (7,), generator=generator)
    probs = torch.softmax(torch.randn(7, 5, generator=generator), 1)
    return logits, labels, probs


def _value_and_grad(
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    logits: torch.Tensor,
    target: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = logits.clone().requires_grad_(True)
    value = loss(logits, target)
    value.backward()
    return value.detach(), logits.grad


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("smoothing", [0.1, 0.4])
@pytest.mark.parametrize("targets", ["indices", "probabilities"])
def test_weighted_smoothed_loss_equals_pytorchs(seed: int, smoothing: float, targets: str) -> None:
    logits, labels, probs = _batch(seed)
    target = labels if targets == "indices" else probs
    ours = make_loss(WEIGHT, smoothing)
    assert isinstance(ours, WeightedSmoothedCrossEntropy)
    value, grad = _value_and_grad(ours, logits, target)
    pytorchs = partial(F.cross_entropy, weight=WEIGHT, label_smoothing=smoothing)
    want, want_grad = _value_and_grad(pytorchs, logits, target)
    assert value.item() == pytest.approx(want.item(), rel=1e-6)
    assert torch.allclose(grad, want_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("weight", "smoothing"), [(None, 0.0), (None, 0.1), (WEIGHT, 0.0)])
def test_every_other_combination_is_pytorchs_own_loss(
    weight: torch.Tensor | None, smoothing: float
) -> None:
    loss = make_loss(weight, smoothing)
    assert type(loss) is nn.CrossEntropyLoss and loss.label_smoothing == smoothing
    assert (loss.weight is None) == (weight is None)
