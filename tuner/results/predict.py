"""``tuner predict``: an export folder and image files -> the top classes of each image.

Images are decoded and preprocessed exactly as in training (:func:`tuner.load_model`) and
run in batches. A file that cannot be decoded is skipped and reported, so one bad file in
a folder of thousands does not cost the rest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from tuner.data import IMAGE_EXTENSIONS, find_images, load_image_file
from tuner.errors import TunerError
from tuner.results.export import load_model

BATCH_SIZE = 64


@dataclass(frozen=True)
class Prediction:
    """One image's most likely classes, most likely first, with their probabilities."""

    path: Path
    top: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class PredictOutcome:
    predictions: tuple[Prediction, ...]
    bad_files: tuple[tuple[Path, str], ...]  # (path, why it was skipped)


def image_files(inputs: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[Path]]:
    """(image files, missing inputs): files as given, folders walked recursively and sorted.

    In folders, files with an image extension are kept and hidden files left out, as for
    ``data.source: folder``; a file named on its own is kept whatever its extension.
    """
    found, missing = [], []
    for item in map(Path, inputs):
        if item.is_dir():
            found += find_images(item)
        elif item.is_file():
            found.append(item)
        else:
            missing.append(item)
    return found, missing


def predict(
    model_dir: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    top_k: int = 3,
    batch_size: int = BATCH_SIZE,
) -> PredictOutcome:
    """Predict every image in ``inputs`` (files and folders) with the export in ``model_dir``.

    Raises TunerError when the export cannot be loaded, ``top_k`` is below 1, or the inputs
    hold no image file at all; unreadable files only land in ``bad_files``.
    """
    if top_k < 1:
        raise TunerError(f"--top-k must be at least 1, got {top_k}.")
    loaded = load_model(model_dir)
    files, missing = image_files(inputs)
    if not files:
        problem = (
            f"{missing[0]}: no such file or folder"
            if missing
            else f"no image files ({' '.join(IMAGE_EXTENSIONS)}) in {', '.join(map(str, inputs))}"
        )
        raise TunerError(f"{problem}; give image files or folders holding them.")
    bad = [(path, "no such file or folder") for path in missing]
    predictions: list[Prediction] = []
    k = min(top_k, len(loaded.class_names))
    for start in range(0, len(files), batch_size):
        decoded = []
        for path in files[start : start + batch_size]:
            try:
                decoded.append((path, load_image_file(path, fit_to=loaded.config["image_size"])))
            except TunerError as exc:
                bad.append((path, str(exc.__cause__ or exc)))
        if not decoded:
            continue
        with torch.no_grad():
            logits = loaded.model(loaded.preprocess([image for _, image in decoded]))
        probs, indices = logits.softmax(1).topk(k, dim=1)
        for (path, _), p_row, i_row in zip(decoded, probs.tolist(), indices.tolist(), strict=True):
            top = tuple((loaded.class_names[i], p) for i, p in zip(i_row, p_row, strict=True))
            predictions.append(Prediction(path, top))
    return PredictOutcome(tuple(predictions), tuple(bad))


def format_table(outcome: PredictOutcome) -> str:
    """One row per image: its path, then each top class with its probability."""
    if not outcome.predictions:
        return "no image could be read."
    k = len(outcome.predictions[0].top)
    rows = [["path", *(f"top {rank + 1}" for rank in range(k))]]
    rows += [
        [str(p.path), *(f"{name} ({prob:.3f})" for name, prob in p.top)]
        for p in outcome.predictions
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(k + 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def format_json_lines(outcome: PredictOutcome) -> str:
    """One JSON object per line and image: {"path", "top": [{"class", "probability"}, ...]}."""
    return "\n".join(
        json.dumps(
            {
                "path": str(p.path),
                "top": [{"class": name, "probability": prob} for name, prob in p.top],
            }
        )
        for p in outcome.predictions
    )
