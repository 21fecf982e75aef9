"""Per-trial PNGs the dashboard shows as trial artifacts: learning curve and confusion matrix."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never open a window, never need a display

import matplotlib.pyplot as plt
import torch

from tuner.data import PreparedData
from tuner.engine import EpochMetrics, TrainResult, confusion_matrix


def learning_curve_png(history: Sequence[EpochMetrics], title: str) -> bytes:
    """Val accuracy and train loss per epoch; shaded epochs had frozen stages."""
    epochs = [m.epoch for m in history]
    fig, accuracy_axis = plt.subplots(figsize=(6.5, 3.8))
    loss_axis = accuracy_axis.twinx()
    accuracy_axis.plot(epochs, [m.val_accuracy for m in history], "o-", color="#1f77b4")
    loss_axis.plot(epochs, [m.train_loss for m in history], "s--", color="#d62728")
    for m in history:
        if m.frozen_depth:
            accuracy_axis.axvspan(
                m.epoch - 0.5, m.epoch + 0.5, color="grey", alpha=0.08 * m.frozen_depth
            )
    accuracy_axis.set_xlabel("epoch (shading: stages frozen)")
    accuracy_axis.set_ylabel("val accuracy", color="#1f77b4")
    loss_axis.set_ylabel("train loss", color="#d62728")
    accuracy_axis.set_xticks(epochs)
    accuracy_axis.set_title(title)
    accuracy_axis.grid(alpha=0.3)
    return _png(fig)


def confusion_png(matrix: torch.Tensor, class_names: Sequence[str], title: str) -> bytes:
    """The confusion matrix with counts in the cells, rows true and columns predicted."""
    n = len(class_names)
    size = min(12.0, 2.5 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    image = ax.imshow(matrix.numpy(), cmap="Blues")
    ax.set_xticks(
        range(n), class_names, rotation=45 if n > 6 else 0, ha="right" if n > 6 else "center"
    )
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        threshold = matrix.max().item() / 2
        for (row, col), count in zip(
            torch.cartesian_prod(torch.arange(n), torch.arange(n)).tolist(),
            matrix.flatten().tolist(),
            strict=True,
        ):
            if count:
                ax.text(col, row, str(count), ha="center", va="center", fontsize=8,
                        color="white" if count > threshold else "black")  # fmt: skip
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title(title)
    return _png(fig)


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def trial_figures(
    number: int, result: TrainResult, predictions: torch.Tensor, data: PreparedData, folder: Path
) -> list[Path]:
    """The learning curve, and the confusion matrix of the best epoch's weights on val."""
    accuracy = result.best_accuracy
    matrix = confusion_matrix(data.val_labels, predictions, data.num_classes)
    curve = folder / f"learning-curve-trial-{number}.png"
    curve.write_bytes(learning_curve_png(result.history, f"Trial {number}: learning curve"))
    confusion = folder / f"confusion-matrix-trial-{number}.png"
    title = f"Trial {number}: val confusion at epoch {result.best_epoch} (acc {accuracy:.3f})"
    confusion.write_bytes(confusion_png(matrix, data.class_names, title))
    return [curve, confusion]
