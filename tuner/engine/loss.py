"""The training loss: cross-entropy with the run's class weights and label smoothing, sync-free.

PyTorch's cross_entropy with class weights and label smoothing on class-index targets sums
the weights of the targets through a ``masked_select`` (to drop ``ignore_index``), whose
output size depends on the data: on a GPU every step would wait for the device there.
:class:`WeightedSmoothedCrossEntropy` computes the same value without it; every other
combination is PyTorch's own loss, which needs no such op.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def make_loss(weight: Tensor | None, label_smoothing: float) -> nn.Module:
    """Mean cross-entropy over a batch of logits and class indices or class probabilities."""
    if weight is None or label_smoothing == 0:
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
    return WeightedSmoothedCrossEntropy(weight, label_smoothing)


class WeightedSmoothedCrossEntropy(nn.Module):
    """``nn.CrossEntropyLoss(weight, label_smoothing=eps)`` with no host sync (no ignore_index).

    For class indices y and log-probabilities l of C classes, as PyTorch defines it::

        ((1 - eps) * sum_i w[y_i] * -l[i, y_i] + eps / C * sum_i sum_c w[c] * -l[i, c])
            / sum_i w[y_i]

    Class probabilities (mixed batches) take PyTorch's own path, which has no such sync.
    """

    def __init__(self, weight: Tensor, label_smoothing: float) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        eps = self.label_smoothing
        if target.is_floating_point():
            return F.cross_entropy(logits, target, weight=self.weight, label_smoothing=eps)
        log_probs = F.log_softmax(logits.float(), dim=1)
        weight = self.weight.to(log_probs.dtype)
        target_weight = weight.gather(0, target)
        nll = -log_probs.gather(1, target[:, None]).squeeze(1)
        smooth = -(log_probs * weight).sum(1)
        total = (1 - eps) * (target_weight * nll).sum() + eps / logits.shape[1] * smooth.sum()
        return total / target_weight.sum()
