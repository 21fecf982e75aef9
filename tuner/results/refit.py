"""``export-best --refit``: the winning recipe trained again on training + validation images.

A search spends a fifth of the labelled images on choosing; once chosen, the recipe can
learn from them too (scikit-learn's ``GridSearchCV(refit=True)``). The refit runs the trial's
own schedule for as many epochs as its best epoch took, seeded with the trial's seed, on the
study's device; with no validation images left to choose an epoch on, the held-out test
split is the only fair judge, of it and of the search's own checkpoint alike.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from optuna.trial import FrozenTrial
from torch import nn

from tuner.data import PreparedData, cache_path, with_val_in_training
from tuner.engine import (
    EpochMetrics,
    FeatureCache,
    TrainEnvironment,
    build_model,
    choose_placement,
    resolve_device,
    train_epochs,
)
from tuner.progress import Say
from tuner.search import attrs
from tuner.search import study as study_mod


@dataclass(frozen=True)
class Refit:
    """What the refit trained: for config.json, the model card and the printout."""

    epochs: int
    train_images: int
    seed: int
    device: str
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return {
            **dataclasses.asdict(self),
            "seconds": round(self.seconds, 1),
            "data": "training + validation images",
        }


def refit(
    pinned: study_mod.PinnedStudy,
    trial: FrozenTrial,
    data: PreparedData,
    device: str | None,
    say: Say,
) -> tuple[nn.Module, Refit]:
    """Train ``trial``'s recipe on ``data``'s training and validation images; the eval-mode
    model (on the CPU) and what was done. ``device`` overrides the study's ``train.device``."""
    config = pinned.config
    params = attrs.trial_params(trial, config.space)
    epochs = int(trial.user_attrs[attrs.BEST_EPOCH]) + 1
    seed = attrs.train_seed(trial.user_attrs, config.train.seed, trial.number)
    where = resolve_device(device or config.train.device)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tuner-refit-", dir=cache_path(config.data)) as tmp:
        combined = with_val_in_training(data, Path(tmp))  # mapped: it outlives the folder
    say(
        f"refit: trial #{trial.number}'s recipe on {len(combined.train_labels)} training + "
        f"validation images, {epochs} epoch(s) (its best epoch was {epochs - 1}), seed {seed}, "
        f"on {where}"
    )
    torch.manual_seed(attrs.init_seed(trial.user_attrs, config.train.seed))  # as the trial did
    model = build_model(params.arch, data.num_classes, pinned.weights[params.arch])
    weights = combined.class_weights() if config.data.class_weights == "auto" else None
    environment = TrainEnvironment(
        device=where,
        seed=seed,
        augment=config.data.augment,
        class_weights=weights,
        feature_cache=FeatureCache(config.train.feature_cache_mb << 20),
        resident=choose_placement(combined, where, config.train).resident,
    )

    def progress(metrics: EpochMetrics) -> None:
        say(
            f"refit: epoch {metrics.epoch + 1}/{epochs}, train loss {metrics.train_loss:.4f}, "
            f"{metrics.seconds:.1f} s"
        )

    train_epochs(model, combined, params, config.train, environment, epochs, progress)
    done = Refit(epochs, len(combined.train_labels), seed, str(where), time.monotonic() - started)
    return model.cpu().eval(), done
