"""Accuracy and predictions on a split, from images or from cached frozen-prefix features.

Always in eval mode and float32, in batches with one host sync at the end; :func:`validate`
is the training run's single entry point and picks the cheaper of the two inputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from tuner.data import normalize
from tuner.engine.features import FrozenPrefix, forward_suffix


@torch.no_grad()
def evaluate(
    model: nn.Module, images_uint8: Tensor, labels: Tensor, device: torch.device, batch_size: int
) -> tuple[float, Tensor]:
    """Accuracy (0..1) and the predicted labels (CPU) of ``model`` in eval mode, in float32.

    Images are uint8 on any device; each batch is moved to ``device`` and normalised there.
    """
    if len(labels) == 0:
        raise ValueError("cannot evaluate on zero images")
    model.eval()
    predictions = _predict(lambda x: model(normalize(x.to(device))), images_uint8, batch_size)
    return _accuracy(predictions, labels), predictions


@torch.no_grad()
def validate(
    model: nn.Module,
    images_uint8: Tensor,
    labels: Tensor,
    depth: int,
    frozen: FrozenPrefix | None,
    batch_size: int,
) -> float:
    """:func:`evaluate`'s accuracy on images already on their device, reusing frozen stages.

    With ``frozen`` stages (``depth`` > 0) and room in the cache, the prefix outputs are
    computed once per split and depth (:mod:`tuner.engine.features`) and only the rest of the
    network runs; otherwise the whole network runs on the images.
    """
    features = None
    if frozen is not None and depth > 0:
        features = frozen.features("val", images_uint8, depth, amp=False, prepare=normalize)
    if features is None:
        return evaluate(model, images_uint8, labels, images_uint8.device, batch_size)[0]
    model.eval()
    predictions = _predict(lambda batch: forward_suffix(model, batch, depth), features, batch_size)
    return _accuracy(predictions, labels)


def confusion_matrix(labels: Tensor, predictions: Tensor, classes: int) -> Tensor:
    """[classes, classes] counts on the CPU: rows the true class, columns the predicted one."""
    labels, predictions = labels.cpu(), predictions.cpu()
    matrix = torch.zeros(classes, classes, dtype=torch.long)
    matrix.index_put_((labels, predictions), torch.ones_like(labels), accumulate=True)
    return matrix


def _predict(forward: Callable[[Tensor], Tensor], inputs: Tensor, batch_size: int) -> Tensor:
    """CPU predicted labels of ``forward`` over ``inputs`` in batches (one host sync)."""
    return torch.cat(
        [
            forward(inputs[start : start + batch_size]).argmax(dim=1)
            for start in range(0, len(inputs), batch_size)
        ]
    ).cpu()


def _accuracy(predictions: Tensor, labels: Tensor) -> float:
    return (predictions == labels.cpu()).float().mean().item()
