"""Dataset files in their real on-disk formats, written by tests (nothing is downloaded)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tuner.errors import TunerError
from tuner.results.formats import FORMATS, require_installed

CIFAR_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def cifar_batch(labels: np.ndarray, first_id: int) -> dict:
    """A CIFAR batch dict; red = 20 * label, green = a per-image id, so tests can trace images."""
    n = len(labels)
    images = np.zeros((n, 3, 32, 32), dtype=np.uint8)
    images[:, 0] = (labels * 20)[:, None, None]
    images[:, 1] = (first_id + np.arange(n))[:, None, None]
    images[:, 2, :16] = 255  # top half bright blue: not a flat image
    return {
        "batch_label": f"batch from {first_id}",
        "labels": labels.tolist(),
        "data": images.reshape(n, 3 * 32 * 32),  # row-major CHW, as in the real files
        "filenames": [f"img_{first_id + i}.png" for i in range(n)],
    }


def write_cifar10(root: Path) -> None:
    """5 train batches of 20 (2 per class) and a test batch of 50 (5 per class)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {
        f"data_batch_{i}": cifar_batch(np.tile(np.arange(10), 2), 20 * (i - 1)) for i in range(1, 6)
    }
    batches["test_batch"] = cifar_batch(np.tile(np.arange(10), 5), 100)
    batches["batches.meta"] = {
        "label_names": list(CIFAR_NAMES),
        "num_cases_per_batch": 20,
        "num_vis": 3072,
    }
    for name, content in batches.items():
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))


def save_image(path: Path, image: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def red_label(images: torch.Tensor, step: int) -> torch.Tensor:
    """The label a fixture encoded into the red channel."""
    return (images[:, 0, 0, 0].long() + step // 2) // step


def format_installed(name: str) -> bool:
    """Whether this environment has the packages of export format ``name`` (the onnx extra)."""
    try:
        require_installed(FORMATS[name])
    except TunerError:
        return False
    return True


needs_onnx = pytest.mark.skipif(
    not format_installed("onnx"), reason="the onnx extra is not installed"
)
