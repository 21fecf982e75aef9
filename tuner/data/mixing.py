"""Mixup and cutmix: each training batch blended with a shuffled copy of itself, on the device.

Mixup (Zhang et al., 2018) blends whole images, ``lam * x + (1 - lam) * x[perm]``; cutmix
(Yun et al., 2019) pastes a box of ``x[perm]`` covering ``1 - lam`` of the image. The targets
are blended by the same ``lam``, so the loss takes class probabilities. ``lam`` is drawn from
Beta(alpha, alpha); with both on, each batch uses one of the two with equal odds (timm's
``mixup_switch_prob`` 0.5). The shuffled partners come from the run's torch generator; which
of the two, ``lam`` and the box are drawn on the host from a NumPy generator the caller seeds
(never from a number read back from the device, which would stall every step on a GPU). A
seeded run mixes identically, and a resumed one goes on as the uninterrupted one would have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Mixing:
    """How a run mixes its batches: the two alphas (0: off) and the number of classes."""

    mixup: float
    cutmix: float
    num_classes: int

    def __post_init__(self) -> None:
        if self.mixup <= 0 and self.cutmix <= 0:
            raise ValueError("Mixing needs mixup or cutmix above 0")


def mix_batch(
    images: Tensor,
    labels: Tensor,
    mixing: Mixing,
    generator: torch.Generator,
    rng: np.random.Generator,
) -> tuple[Tensor, Tensor]:
    """Mix a float [N,3,H,W] batch and its int labels; returns (images, target probabilities).

    ``generator`` (on the images' device) shuffles the partners; ``rng`` draws the rest.
    """
    use_cutmix = mixing.cutmix > 0 and (mixing.mixup <= 0 or rng.random() < 0.5)
    alpha = mixing.cutmix if use_cutmix else mixing.mixup
    lam = float(rng.beta(alpha, alpha))
    perm = torch.randperm(len(images), generator=generator, device=images.device)
    if use_cutmix:
        images, lam = _paste_box(images, perm, lam, rng)
    else:
        images = images.lerp(images[perm], 1.0 - lam)
    # not F.one_hot, which reads the labels' min and max back to check them (on the CPU)
    one_hot = torch.zeros(len(labels), mixing.num_classes, dtype=images.dtype, device=images.device)
    one_hot.scatter_(1, labels[:, None], 1.0)
    return images, one_hot.lerp(one_hot[perm], 1.0 - lam)


def _paste_box(
    images: Tensor, perm: Tensor, lam: float, rng: np.random.Generator
) -> tuple[Tensor, float]:
    """Paste a box of about ``1 - lam`` of the area from the shuffled batch; lam of the box
    as clipped at the border (what the targets must use)."""
    height, width = images.shape[-2:]
    cut = math.sqrt(1.0 - lam)
    box_h, box_w = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = max(cy - box_h // 2, 0), min(cy + box_h // 2, height)
    left, right = max(cx - box_w // 2, 0), min(cx + box_w // 2, width)
    mixed = images.clone()
    mixed[:, :, top:bottom, left:right] = images[:, :, top:bottom, left:right][perm]
    return mixed, 1.0 - (bottom - top) * (right - left) / (height * width)
