"""One pass over the training split: the batches it draws and the optimizer steps it takes.

:class:`BatchSource` owns batching (as airbench's loader does): each epoch is shuffled by its
own generator, the split's images arrive from the device or streamed from the host
(:mod:`tuner.engine.transfer`), and it alone decides whether an epoch feeds the network
cached frozen-prefix features or augmented images. :func:`train_one_epoch` then only
steps the optimizer, whichever it is.
"""

from __future__ import annotations

import math
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
    features, the partners of mixed images), so it is part of a checkpoint; the shuffle and the
    host-side draws of mixing come from fresh CPU generators per epoch (:func:`_shuffle`,
    :func:`_mixing_rng`). Images are augmented in batch order as they arrive, so the
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
            mixing, rng = self.mixing, _mixing_rng(self.seed, epoch)
            pairs = (mix_batch(x, y, mixing, self.generator, rng) for x, y in pairs)
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

    The steps never read a number back from the device (a GPU would stall on each), so the
    epoch's losses are read once at its end: NonFiniteLossError names the first NaN or
    infinite one.
    """
    step_losses: list[Tensor] = []
    for inputs, labels in batches:
        with autocast:
            loss = loss_fn(batches.forward(inputs), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if after_step is not None:
            after_step()
        step_losses.append(loss.detach())
    losses = torch.stack(step_losses).float()
    mean = losses.mean().item()  # not finite when a step's loss is not (or their sum overflows)
    if not math.isfinite(mean):
        values = losses.tolist()
        bad = [step for step, value in enumerate(values) if not math.isfinite(value)]
        raise NonFiniteLossError(epoch, bad[0] if bad else values.index(max(values)))
    return mean


def _mixing_rng(seed: int, epoch: int) -> np.random.Generator:
    """This epoch's host-side mixing draws (mixup or cutmix, lam, the box): a child of the
    epoch's seed sequence, so a resumed run draws them again without a state of its own."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch]).spawn(1)[0])


def _shuffle(n: int, seed: int, epoch: int) -> Tensor:
    """This epoch's order from a CPU generator of its own, so it is the same on every device."""
    mixed = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(mixed)))
