"""One image -> model input: decode any common file or PIL mode, resize and crop to a square.

Training data and files given at prediction time both pass through here, so they are
preprocessed identically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from tuner.errors import TunerError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def fit_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [C,H,W] or [N,C,H,W] (C = 1 or 3) -> uint8 [..., 3, size, size].

    Resizes the shorter side to ``size`` (bilinear, antialiased, as torchvision's
    ``Resize(size)``) and center-crops, then repeats a single channel three times. Training
    data and single files at prediction time both go through here, so they match.
    """
    if images.dtype != torch.uint8 or images.ndim not in (3, 4) or images.shape[-3] not in (1, 3):
        raise ValueError(
            "fit_square expects uint8 [C,H,W] or [N,C,H,W] with 1 or 3 channels, "
            f"got {images.dtype} {tuple(images.shape)}"
        )
    if tuple(images.shape[-2:]) != (size, size):
        images = TF.resize(images, [size], interpolation=InterpolationMode.BILINEAR, antialias=True)
        images = TF.center_crop(images, [size, size])
    if images.shape[-3] == 1:
        images = images.expand(*images.shape[:-3], 3, size, size)
    return images.contiguous()


def load_fitted(path: Path, size: int) -> torch.Tensor:
    """One file as the model sees it: uint8 [3, size, size], decoded and fitted (see above)."""
    return fit_square(load_image_file(path, fit_to=size), size)


def load_image_file(path: Path, fit_to: int | None = None) -> torch.Tensor:
    """Decode one image file into uint8 [3, H, W] RGB with :func:`pil_to_tensor`.

    With ``fit_to`` (the size :func:`fit_square` will make of it), a JPEG is decoded at the
    smallest DCT scale (1/2, 1/4 or 1/8) whose sides stay at least ``fit_to``: a 4000 px
    photo for a 224 px model decodes several times faster. Training data and files given at
    prediction time both pass ``fit_to``, so they get the same pixels.

    Raises:
        TunerError: naming ``path`` when the file cannot be read or decoded.
    """
    try:
        with Image.open(path) as image:
            if fit_to is not None:
                image.draft(None, (fit_to, fit_to))  # no-op for formats other than JPEG
            return pil_to_tensor(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # PIL reports broken files as any of these (SyntaxError for malformed PNG chunks).
        raise TunerError(f"{path}: cannot read this image ({exc}). Fix or replace it.") from exc


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image of any common mode -> uint8 [3, H, W] RGB, exactly as files are decoded.

    Applies the EXIF orientation; composites transparency (RGBA, LA, palette with a
    transparent colour) over white, so hidden pixels do not leak into the image; scales
    16-bit greyscale to 8 bits instead of clipping it as PIL's ``convert`` would.
    """
    if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:  # else exif_transpose copies
        image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I"):  # I;16 variants, and I (32-bit) as TIFF gives 16-bit data
        wide = np.clip(np.asarray(image).astype(np.float64), 0, 65535)
        grey = torch.from_numpy(np.round(wide / 257).astype(np.uint8))
        return grey.expand(3, *grey.shape).contiguous()
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    rgb = np.array(image if image.mode == "RGB" else image.convert("RGB"))  # a writable copy
    # a [3, H, W] view of the [H, W, 3] pixels: resizing reads this layout fastest
    return torch.from_numpy(rgb).permute(2, 0, 1)
