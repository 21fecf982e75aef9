"""The reference searcher of ``bench/anytime.py`` reads its labels back from folder names.

torchvision's ImageFolder numbers classes by their sorted folder names, so a folder per
class name gave Fashion-MNIST's "T-shirt/top" a nested folder and a wrong label, and more than
ten classes would sort "10" before "2": the reference's test accuracy was that of shuffled
labels. ``anytime.class_folder`` names folders so the numbering is the label.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision.datasets import ImageFolder

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import anytime  # noqa: E402

NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
         "Bag", "Ankle boot", "10th", "Zebra")  # fmt: skip


def test_image_folder_reads_back_every_label(tmp_path: Path) -> None:
    labels = [11, 0, 3, 10, 2, 9, 0, 1, 4, 5, 6, 7, 8]
    for i, label in enumerate(labels):
        path = tmp_path / anytime.class_folder(label, NAMES) / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(path)
    folder = ImageFolder(str(tmp_path))
    assert len(folder.classes) == len(set(labels))
    read = {Path(path).stem: target for path, target in folder.samples}
    assert [read[str(i)] for i in range(len(labels))] == labels
