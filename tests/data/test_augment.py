"""Batched on-device augmentation: shapes, statistics and exact geometry of each mode."""

from __future__ import annotations

import pytest
import torch

from tuner.config import AUGMENTATIONS
from tuner.data.augment import (
    CROP_RATIO,
    CROP_SCALE,
    _jitter,
    _sample_crop_boxes,
    augment_batch,
    normalize,
)
from tuner.data.images import IMAGENET_MEAN, IMAGENET_STD

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _pixels(normalised: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation: back to the 0..255 scale of the input."""
    return (normalised * STD + MEAN) * 255


def _random_images(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)


@pytest.mark.parametrize("augment", AUGMENTATIONS)
def test_output_dtype_shape_and_device(augment: str) -> None:
    images = _random_images(8)
    out = augment_batch(images, augment, torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32
    assert out.shape == images.shape
    assert out.device == images.device


def test_normalize_maps_extremes_to_imagenet_range() -> None:
    images = torch.stack([torch.zeros(3, 2, 2), torch.full((3, 2, 2), 255.0)]).to(torch.uint8)
    out = normalize(images)
    assert torch.allclose(out[0], (-MEAN / STD)[0].expand(3, 2, 2))
    assert torch.allclose(out[1], ((1 - MEAN) / STD)[0].expand(3, 2, 2))


def test_none_is_just_normalize() -> None:
    images = _random_images(4)
    assert torch.equal(augment_batch(images, "none", torch.Generator()), normalize(images))


def test_flip_rate_and_flipped_samples_are_exact_mirrors() -> None:
    images = _random_images(2000, size=8)
    out = augment_batch(images, "flip", torch.Generator().manual_seed(1))
    plain, mirrored = normalize(images), normalize(images.flip(-1))
    is_plain = (out == plain).flatten(1).all(1)
    is_mirror = (out == mirrored).flatten(1).all(1)
    assert bool((is_plain ^ is_mirror).all())  # each sample exactly one of the two
    assert 0.45 < is_mirror.float().mean().item() < 0.55


def test_same_seed_same_batch_different_seed_different_batch() -> None:
    images = _random_images(16)
    for augment in ("flip", "crop_flip", "crop_flip_jitter"):
        a = augment_batch(images, augment, torch.Generator().manual_seed(3))
        b = augment_batch(images, augment, torch.Generator().manual_seed(3))
        c = augment_batch(images, augment, torch.Generator().manual_seed(4))
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


def test_crop_boxes_follow_scale_and_ratio_bounds() -> None:
    boxes = _sample_crop_boxes(4000, 32, 32, torch.Generator().manual_seed(0), torch.device("cpu"))
    left, top, w, h = boxes.unbind(1)
    area, ratio = w * h, w / h
    assert bool(((left >= 0) & (top >= 0) & (left + w <= 1 + 1e-6) & (top + h <= 1 + 1e-6)).all())
    assert bool((area >= CROP_SCALE[0] - 1e-6).all()) and bool((area <= CROP_SCALE[1] + 1e-6).all())
    drawn = area < 1 - 1e-6  # the rare whole-image fallback has ratio 1, inside the range too
    assert bool((ratio[drawn] >= CROP_RATIO[0] - 1e-5).all())
    assert bool((ratio[drawn] <= CROP_RATIO[1] + 1e-5).all())
    # the areas spread over the whole range rather than collapsing on one value
    assert area.min().item() < 0.4 and area.max().item() > 0.95


def test_crop_flip_resamples_exactly_the_sampled_box() -> None:
    """On a horizontal ramp (pixel value = column) the output must be the box's columns."""
    n, size = 64, 32
    ramp = torch.arange(size, dtype=torch.uint8).expand(n, 3, size, size).contiguous()
    boxes = _sample_crop_boxes(n, size, size, torch.Generator().manual_seed(5), torch.device("cpu"))
    out = _pixels(augment_batch(ramp, "crop_flip", torch.Generator().manual_seed(5)))
    left, w = boxes[:, 0:1], boxes[:, 2:3]
    centres = left * size + w * (torch.arange(size) + 0.5) - 0.5  # column under each output pixel
    centres = centres.clamp(0, size - 1)  # beyond the outer pixel centres the border value holds
    row = out[:, 0, size // 2, :]
    unflipped = (row - centres).abs().amax(1) < 0.05
    flipped = (row - centres.flip(1)).abs().amax(1) < 0.05
    assert bool((unflipped ^ flipped).all())
    assert 0 < flipped.sum().item() < n


def test_jitter_brightness_and_contrast_follow_colorjitter() -> None:
    n = 2000
    flat = torch.full((n, 3, 8, 8), 100, dtype=torch.uint8)
    out = _pixels(augment_batch(flat, "crop_flip_jitter", torch.Generator().manual_seed(0)))
    level = out.mean(dim=(1, 2, 3))  # contrast leaves a flat image alone: only brightness shows
    assert level.min().item() >= 80 - 0.1 and level.max().item() <= 120 + 0.1
    assert level.min().item() < 82 and level.max().item() > 118


def test_contrast_blends_with_the_mean_grey_level() -> None:
    """ColorJitter's contrast: v -> c*v + (1-c)*mean_grey, c ~ U(0.8, 1.2), then brightness."""
    halves = torch.full((2000, 3, 8, 8), 50.0)
    halves[:, :, 4:] = 150.0  # mean grey 100; no crop here, so the two levels stay exact
    out = _jitter(halves, torch.Generator().manual_seed(1))
    high, low = out.amax(dim=(1, 2, 3)), out.amin(dim=(1, 2, 3))
    # either order gives (high - low) / 100 = c * b and (high + low) / 200 = b
    brightness = (high + low) / 200
    contrast = (high - low) / 100 / brightness
    assert contrast.min().item() >= 0.8 - 1e-3 and contrast.max().item() <= 1.2 + 1e-3
    assert contrast.min().item() < 0.82 and contrast.max().item() > 1.18


def test_jitter_stays_within_the_normalised_input_range() -> None:
    images = _random_images(256, size=16)
    out = augment_batch(images, "crop_flip_jitter", torch.Generator().manual_seed(2))
    lowest, highest = -MEAN / STD, (1 - MEAN) / STD
    assert bool((out >= lowest - 1e-5).all()) and bool((out <= highest + 1e-5).all())
    assert not torch.equal(out, normalize(images))


def test_unknown_augmentation_is_refused() -> None:
    with pytest.raises(ValueError, match="cutmix"):
        augment_batch(_random_images(2), "cutmix", torch.Generator())
