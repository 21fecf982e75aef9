"""One pass over the training split: the batches it draws and the optimizer steps it takes.

:class:`BatchSource` owns batching (as airbench's loader does): each epoch is shuffled by its
own generator, the split's images arrive from the device or streamed from the host
(:mod:`tuner.engine.transfer`), and it alone decides whether an epoch feeds the network
cached frozen-prefix features or augmented images. :func:`train_one_epoch` then only
steps the optimizer, whichever it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import Tensor, nn

from tuner.data import Mixing, augment_batch, mix_batch
from tuner.engine.features import (
    FrozenPrefix,
    forward_frozen,
    forward_suffix,
    pick_features,
    train_features,
)
from tuner.engine.records import NonFiniteLossError
from tuner.engine.transfer import ImageSource


@dataclass(frozen=True)
class EpochBatches:
    """One epoch's shuffled ``(inputs, labels)`` batches and the ``forward`` they need."""

    batches: Iterable[tuple[Tensor, Tensor]]
    forward: Callable[[Tensor], Tensor]  # inputs -> logits

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return iter(self.batches)


@dataclass(frozen=True)
class BatchSource:
    """The training split (resident or streamed) and how every epoch of one run batches it.

    ``generator`` (on the compute device) draws every augmentation (and the flips of cached
    features), so it is part of a checkpoint; the shuffle comes from a fresh CPU generator per
    epoch (:func:`_shuffle`). Images are augmented in batch order as they arrive, so the
    resident and streamed paths draw the same numbers and train identically.
    """

    images: ImageSource  # uint8 [N, 3, S, S]
    labels: Tensor  # on the compute device
    augment: str
    generator: torch.Generator
    frozen: FrozenPrefix | None  # None: frozen stages run every step, as in the plain model
    seed: int
    batch_size: int
    mixing: Mixing | None = None  # mixup/cutmix: labels become class probabilities

    def epoch(self, model: nn.Module, epoch: int, depth: int, epochs_left: int) -> EpochBatches:
        """The batches of ``epoch`` with ``depth`` stages frozen for ``epochs_left`` epochs.

        Cached prefix outputs where their input is fixed (see :func:`train_features`); else
        augmented images, with the frozen prefix run under no_grad when there is a cache.
        Mixed batches are never cached: each blends images anew, so the prefix runs on them.
        """
        cached = None
        if self.mixing is None:
            cached = train_features(self.frozen, self.images, depth, self.augment, epochs_left)
        order = _shuffle(len(self.images), self.seed, epoch)
        # stop before a final batch of one image: BatchNorm cannot train on it
        spans = [
            (start, min(start + self.batch_size, len(order)))
            for start in range(0, len(order) - 1, self.batch_size)
        ]
        on_device = order.to(self.labels.device)
        labels = (self.labels[on_device[start:stop]] for start, stop in spans)
        if cached is not None:
            picked = (
                pick_features(cached, on_device[start:stop], self.generator)
                for start, stop in spans
            )
            return EpochBatches(
                zip(picked, labels, strict=True), partial(forward_suffix, model, depth=depth)
            )
        augmented = (
            augment_batch(images, self.augment, self.generator)
            for images in self.images.gather(order, spans)
        )
        forward = model if self.frozen is None else partial(forward_frozen, model, depth=depth)
        pairs = zip(augmented, labels, strict=True)
        if self.mixing is not None:
            mixing = self.mixing
            pairs = (mix_batch(x, y, mixing, self.generator) for x, y in pairs)
        return EpochBatches(pairs, forward)


def train_one_epoch(
    model: nn.Module,
    batches: EpochBatches,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    autocast: torch.autocast,
    *,
    epoch: int,
    grad_clip: float | None,
    after_step: Callable[[], None] | None = None,
) -> float:
    """One optimizer step per batch, then ``after_step`` (the weight average); returns the
    epoch's mean training loss.

    Raises NonFiniteLossError at the first NaN or infinite loss: at that step on CPU, where
    the check is free, at the end of the epoch on CUDA, where it would stall every step.
    """
    step_losses: list[Tensor] = []
    for inputs, labels in batches:
        with autocast:
            loss = loss_fn(batches.forward(inputs), labels)
        if loss.device.type != "cuda" and not torch.isfinite(loss):
            raise NonFiniteLossError(epoch, len(step_losses))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if after_step is not None:
            after_step()
        step_losses.append(loss.detach())
    losses = torch.stack(step_losses).float()
    bad_steps = torch.nonzero(~torch.isfinite(losses))
    if len(bad_steps):
        raise NonFiniteLossError(epoch, int(bad_steps[0]))
    return losses.mean().item()


def _shuffle(n: int, seed: int, epoch: int) -> Tensor:
    """This epoch's order from a CPU generator of its own, so it is the same on every device."""
    mixed = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(mixed)))
