"""The held-out test split, read once per export: the one accuracy a search did not select on.

Nothing in the search or in ``tuner confirm`` loads the test images (``prepare_data`` maps
them only ``with_test``); ``tuner export-best`` evaluates the model it exports on them, and
after a refit the search's own checkpoint beside it, paired image by image. The result is
kept in the export's files and on the study, for ``tuner report``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import torch
from torch import nn

from tuner import stats
from tuner.data import PreparedData
from tuner.engine import confusion_matrix
from tuner.results import formats as formats_mod
from tuner.results.refit import Refit
from tuner.search import attrs


@dataclass(frozen=True)
class TestEvaluation:
    """The exported model on the held-out test split; after a refit, the search's checkpoint
    on the same images too. Each correctness vector is over the test images, in order."""

    split: str  # where the test images come from (PreparedData.test_split)
    predictions: torch.Tensor
    labels: torch.Tensor
    searched_correct: np.ndarray | None = None  # the search's checkpoint, after a refit

    @property
    def correct(self) -> np.ndarray:
        return (self.predictions == self.labels).numpy()

    @property
    def accuracy(self) -> stats.Accuracy:
        return stats.Accuracy.of(self.correct)

    @property
    def searched(self) -> stats.Accuracy | None:
        return None if self.searched_correct is None else stats.Accuracy.of(self.searched_correct)

    @property
    def refit_vs_search(self) -> stats.PairedComparison | None:
        if self.searched_correct is None:
            return None
        return stats.PairedComparison.of(self.correct, self.searched_correct)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"split": self.split, **self.accuracy.to_dict()}
        if self.searched is not None:
            out["search_checkpoint"] = self.searched.to_dict()
            out["refit_vs_search"] = self.refit_vs_search.to_dict()
        return out

    def metrics(self, class_names: tuple[str, ...]) -> dict[str, Any]:
        """metrics.json's ``test``: the record, per-class accuracy and the confusion matrix."""
        return {**self.to_dict(), **class_results(self.labels, self.predictions, class_names)}


def evaluate_test(
    model: nn.Module, searched: nn.Module | None, data: PreparedData, batch: int
) -> TestEvaluation | None:
    """The model (and, after a refit, the search's checkpoint) on the test split, once; None
    without a test split (``data.test_source: none``)."""
    if data.test_images is None or data.test_count == 0:
        return None

    def predict(run: nn.Module) -> torch.Tensor:
        return formats_mod.batched_logits(run, data.test_images, batch).argmax(1)

    searched_correct = None
    if searched is not None:
        searched_correct = (predict(searched) == data.test_labels).numpy()
    return TestEvaluation(data.test_split, predict(model), data.test_labels, searched_correct)


def record_on_study(
    study: optuna.Study, number: int, tested: TestEvaluation | None, refit: Refit | None
) -> None:
    """Keep the test result on the study, for ``tuner report`` (a trial's own attributes are
    read-only once it ended)."""
    if tested is not None:
        record = {"test": tested.to_dict(), "refit": refit.to_dict() if refit else None}
        study.set_user_attr(f"{attrs.TEST_EVALUATION_PREFIX}{number}", record)


def class_results(
    labels: torch.Tensor, predictions: torch.Tensor, class_names: tuple[str, ...]
) -> dict[str, Any]:
    """Per-class accuracy and the confusion matrix of ``predictions`` on one split."""
    confusion = confusion_matrix(labels, predictions, len(class_names))
    per_class = {
        name: (confusion[i, i] / confusion[i].sum()).item() if confusion[i].sum() else None
        for i, name in enumerate(class_names)
    }
    return {
        "per_class_accuracy": per_class,
        "confusion_matrix": {
            "rows_true_cols_predicted": confusion.tolist(),
            "classes": list(class_names),
        },
    }
