"""Decoding one image file or PIL image to uint8 RGB, and fit_square's resize and crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import save_image
from tuner.data.images import fit_square, load_image_file, pil_to_tensor
from tuner.errors import TunerError


def test_image_modes_decode_to_rgb(tmp_path: Path) -> None:
    grey = save_image(tmp_path / "grey.png", Image.new("L", (3, 2), 77))
    assert load_image_file(grey).tolist() == torch.full((3, 2, 3), 77).tolist()

    rgba = Image.new("RGBA", (2, 1), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 255, 0, 0))  # fully transparent green -> the white background
    assert torch.equal(pil_to_tensor(rgba), torch.tensor([[255, 255], [0, 255], [0, 255]])[:, None])
    assert load_image_file(save_image(tmp_path / "rgba.png", rgba))[:, 0].T.tolist() == [
        [255, 0, 0],
        [255, 255, 255],
    ]

    la = Image.new("LA", (1, 1), (0, 128))  # half-transparent black over white
    assert load_image_file(save_image(tmp_path / "la.png", la)).flatten().tolist() == [
        127,
        127,
        127,
    ]

    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 1
    assert load_image_file(save_image(tmp_path / "p.png", palette))[:, 0].T.tolist() == [
        [255, 0, 0],
        [255, 255, 255],
    ]

    cmyk = Image.new("CMYK", (1, 1), (0, 255, 255, 0))  # pure red in print colours
    assert load_image_file(save_image(tmp_path / "cmyk.tif", cmyk)).flatten().tolist() == [
        255,
        0,
        0,
    ]


@pytest.mark.parametrize("name", ["deep.png", "deep.tif"])
def test_16_bit_images_are_scaled_not_clipped(tmp_path: Path, name: str) -> None:
    values = np.array([[0, 257 * 100, 32896, 65535]], dtype=np.uint16)
    image = (
        Image.fromarray(values)
        if name.endswith("png")
        else Image.fromarray(values.astype(np.int32))
    )
    path = save_image(tmp_path / name, image)
    assert Image.open(path).mode in ("I;16", "I")
    decoded = load_image_file(path)
    assert decoded.shape == (3, 1, 4) and decoded.dtype == torch.uint8
    assert decoded[0, 0].tolist() == [0, 100, 128, 255]


def test_unreadable_file_names_its_path(tmp_path: Path) -> None:
    path = tmp_path / "fake.jpg"
    path.write_bytes(b"GIF89a nonsense")
    with pytest.raises(TunerError, match=r"fake\.jpg"):
        load_image_file(path)
    with pytest.raises(TunerError, match=r"missing\.png"):
        load_image_file(tmp_path / "missing.png")


def test_fit_square_crops_the_centre_and_replicates_grey() -> None:
    wide = torch.zeros((1, 20, 40), dtype=torch.uint8)
    wide[:, :, 10:30] = 100  # the middle half; the outer quarters are cropped away
    out = fit_square(wide, 20)
    assert out.shape == (3, 20, 20) and out.dtype == torch.uint8
    assert bool(out.eq(100).all())

    batch = torch.randint(0, 256, (5, 3, 48, 64), dtype=torch.uint8)
    resized = fit_square(batch, 24)
    assert resized.shape == (5, 3, 24, 24) and resized.is_contiguous()
    one_by_one = torch.stack([fit_square(image, 24) for image in batch])
    assert torch.equal(resized, one_by_one)  # batch-wise == per file (train vs predict)
