"""Accuracy and predictions on a split, from images or from cached frozen-prefix features.

Always in eval mode and float32, in batches with one host sync at the end; :func:`validate`
is the training run's single entry point and picks the cheaper of the two inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from tuner.data import normalize
from tuner.engine.features import FrozenPrefix, forward_suffix
from tuner.engine.transfer import ImageSource, image_source


@torch.no_grad()
def evaluate(
    model: nn.Module, images_uint8: Tensor, labels: Tensor, device: torch.device, batch_size: int
) -> tuple[float, Tensor]:
    """Accuracy (0..1) and the predicted labels (CPU) of ``model`` in eval mode, in float32.

    Images are uint8 on any device; host images are streamed to ``device`` batch by batch.
    """
    source = image_source(images_uint8, device, resident=images_uint8.device == device)
    return _evaluate_source(model, source, labels, batch_size)


@torch.no_grad()
def validate(
    model: nn.Module,
    images: ImageSource,
    labels: Tensor,
    depth: int,
    frozen: FrozenPrefix | None,
    batch_size: int,
) -> tuple[float, Tensor]:
    """:func:`evaluate` on a run's validation split, reusing frozen stages: (accuracy, the
    predicted labels on the CPU).

    With ``frozen`` stages (``depth`` > 0) and room in the cache, the prefix outputs are
    computed once per split and depth (:mod:`tuner.engine.features`) and only the rest of the
    network runs; otherwise the whole network runs on the images.
    """
    features = None
    if frozen is not None and depth > 0:
        features = frozen.features("val", images, depth, amp=False, prepare=normalize)
    if features is None:
        return _evaluate_source(model, images, labels, batch_size)
    model.eval()
    batches = (
        features[start : start + batch_size] for start in range(0, len(features), batch_size)
    )
    predictions = _predict(lambda batch: forward_suffix(model, batch, depth), batches)
    return _accuracy(predictions, labels), predictions


def _evaluate_source(
    model: nn.Module, images: ImageSource, labels: Tensor, batch_size: int
) -> tuple[float, Tensor]:
    if len(labels) == 0:
        raise ValueError("cannot evaluate on zero images")
    model.eval()
    predictions = _predict(lambda x: model(normalize(x)), images.chunks(batch_size))
    return _accuracy(predictions, labels), predictions


def confusion_matrix(labels: Tensor, predictions: Tensor, classes: int) -> Tensor:
    """[classes, classes] counts on the CPU: rows the true class, columns the predicted one."""
    labels, predictions = labels.cpu(), predictions.cpu()
    matrix = torch.zeros(classes, classes, dtype=torch.long)
    matrix.index_put_((labels, predictions), torch.ones_like(labels), accumulate=True)
    return matrix


def _predict(forward: Callable[[Tensor], Tensor], batches: Iterable[Tensor]) -> Tensor:
    """CPU predicted labels of ``forward`` over ``batches`` (one host sync at the end)."""
    return torch.cat([forward(batch).argmax(dim=1) for batch in batches]).cpu()


def _accuracy(predictions: Tensor, labels: Tensor) -> float:
    return (predictions == labels.cpu()).float().mean().item()
