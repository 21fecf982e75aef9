"""Batched augmentation and normalisation on the device the images already live on.

The prepared dataset is a uint8 tensor that is moved to the accelerator once; every
training batch is augmented here with a handful of batched tensor operations (no
per-sample Python loop, no DataLoader workers), which keeps small-image fine-tuning
GPU-bound instead of CPU-bound. All randomness comes from the caller's generator, so a
trial seeded the same way sees the same augmented batches.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from tuner.config import AUGMENTATIONS
from tuner.data.images import IMAGENET_MEAN, IMAGENET_STD

CROP_SCALE = (0.35, 1.0)
"""Area fraction of the image a random resized crop keeps (torchvision's ``scale``)."""
CROP_RATIO = (3 / 4, 4 / 3)
"""Aspect-ratio range of a random resized crop (torchvision's ``ratio``)."""
JITTER = 0.2
"""Brightness and contrast jitter strength, as in torchvision's ``ColorJitter(0.2, 0.2)``."""
_CROP_TRIES = 10  # torchvision's RandomResizedCrop also gives up after 10 rejected draws


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N,3,H,W] -> float32 normalised with the ImageNet mean/std the weights expect."""
    return _normalize_float(images.float())


def augment_batch(images: torch.Tensor, augment: str, generator: torch.Generator) -> torch.Tensor:
    """Randomly augment every sample of a uint8 [N,3,H,W] batch and normalise it.

    Args:
        images: uint8 [N,3,H,W] on any device.
        augment: one of ``config.AUGMENTATIONS``: "none", "flip" (horizontal flip, p=0.5),
            "crop_flip" (random resized crop to the same size, scale (0.35, 1), ratio (3/4, 4/3),
            plus flip) or "crop_flip_jitter" (crop_flip plus brightness/contrast jitter of 0.2).
        generator: the source of all randomness; must live on ``images.device``.

    Returns:
        float32 [N,3,H,W] on the same device, normalised like :func:`normalize`.
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augment!r}; expected one of {AUGMENTATIONS}")
    x = images.float()
    n, device = x.shape[0], x.device
    if augment == "flip":
        x = torch.where(flip_draw(n, generator, device)[:, None, None, None], x.flip(-1), x)
    elif augment in ("crop_flip", "crop_flip_jitter"):
        x = _crop_flip(x, generator)
        if augment == "crop_flip_jitter":
            x = _jitter(x, generator)
    return _normalize_float(x)


def flip_draw(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """bool [n]: which samples the "flip" augmentation mirrors (p = 0.5).

    Shared with the cached-feature path, which picks each image's mirrored or plain features
    with the same draw, so both paths see the same flips.
    """
    return torch.rand(n, generator=generator, device=device) < 0.5


def _normalize_float(x: torch.Tensor) -> torch.Tensor:
    mean, std = _imagenet_stats(x.device)
    return (x / 255.0 - mean) / std


@lru_cache
def _imagenet_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and std as [1,3,1,1] tensors on ``device``, made once: building them from
    Python lists is a blocking host -> device copy, which every batch would otherwise pay."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return mean, std


def _sample_crop_boxes(
    n: int, height: int, width: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Draw n crop boxes the way torchvision's RandomResizedCrop does, but for a whole batch.

    Returns float [n, 4]: (left, top, width, height) as fractions of the image size. Like
    torchvision, each sample gets up to 10 (area, ratio) draws and keeps the first that fits
    inside the image; a sample whose draws all fail falls back to the whole image.
    """
    shape = (n, _CROP_TRIES)
    area = CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * torch.rand(
        shape, generator=generator, device=device
    )
    log_lo, log_hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    ratio = torch.exp(
        log_lo + (log_hi - log_lo) * torch.rand(shape, generator=generator, device=device)
    )
    w = torch.sqrt(area * ratio * height / width)
    h = torch.sqrt(area / ratio * width / height)
    fits = (w <= 1) & (h <= 1)
    first = torch.argmax(fits.int(), dim=1, keepdim=True)  # index of the first fitting draw
    any_fit = fits.any(dim=1)
    whole = torch.ones(n, device=device)
    w = torch.where(any_fit, w.gather(1, first).squeeze(1), whole)
    h = torch.where(any_fit, h.gather(1, first).squeeze(1), whole)
    left = (1 - w) * torch.rand(n, generator=generator, device=device)
    top = (1 - h) * torch.rand(n, generator=generator, device=device)
    return torch.stack([left, top, w, h], dim=1)


def _crop_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random resized crop back to the input size plus a horizontal flip, in one grid_sample.

    The flip is folded into the affine map (a negative x scale), so the crop and the mirror
    cost a single resampling pass.
    """
    n, _, height, width = x.shape
    left, top, w, h = _sample_crop_boxes(n, height, width, generator, x.device).unbind(1)
    flip = torch.rand(n, generator=generator, device=x.device) < 0.5
    theta = torch.zeros(n, 2, 3, device=x.device)
    # affine_grid maps output coordinates in [-1, 1] to input ones: x_in = scale * x_out + shift.
    theta[:, 0, 0] = torch.where(flip, -w, w)
    theta[:, 0, 2] = 2 * left + w - 1
    theta[:, 1, 1] = h
    theta[:, 1, 2] = 2 * top + h - 1
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _jitter(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Brightness and contrast jitter with torchvision ColorJitter's formulas and random order.

    Brightness scales the pixels by b ~ U(0.8, 1.2); contrast blends with the image's mean
    grey level by c ~ U(0.8, 1.2); each step clamps to [0, 255] and the order is random per
    sample, as in ColorJitter.
    """
    n, device = x.shape[0], x.device
    lo, hi = 1 - JITTER, 1 + JITTER
    brightness = (lo + (hi - lo) * torch.rand(n, generator=generator, device=device)).view(
        n, 1, 1, 1
    )
    contrast = (lo + (hi - lo) * torch.rand(n, generator=generator, device=device)).view(n, 1, 1, 1)
    brightness_first = (torch.rand(n, generator=generator, device=device) < 0.5).view(n, 1, 1, 1)

    def adjust_brightness(t: torch.Tensor) -> torch.Tensor:
        return (t * brightness).clamp(0, 255)

    def adjust_contrast(t: torch.Tensor) -> torch.Tensor:
        grey = 0.2989 * t[:, 0] + 0.587 * t[:, 1] + 0.114 * t[:, 2]
        mean = grey.mean(dim=(1, 2)).view(n, 1, 1, 1)
        return (contrast * t + (1 - contrast) * mean).clamp(0, 255)

    x = torch.where(brightness_first, adjust_brightness(x), x)
    x = adjust_contrast(x)
    return torch.where(brightness_first, x, adjust_brightness(x))
