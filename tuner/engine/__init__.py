"""The engine: the ResNet and its weights, the frozen-feature cache, the training run.

torch, never optuna: a run reports each epoch through a hook that may ask it to stop.
Other layers use the names below; the modules hold the rest.
"""

from tuner.engine.device import configure_backends, resolve_device
from tuner.engine.evaluate import confusion_matrix, evaluate
from tuner.engine.features import FeatureCache
from tuner.engine.model import build_model
from tuner.engine.placement import (
    WORKERS_ON_DEVICE_ENV,
    Placement,
    choose_placement,
    feature_cache_bytes,
)
from tuner.engine.records import EpochMetrics, NonFiniteLossError, TrainCheckpoint, TrainResult
from tuner.engine.train import TrainEnvironment, TrainHooks, train, train_epochs
from tuner.engine.transfer import DeviceCopies
from tuner.engine.weights import file_sha256, resolve_study_weights, resolve_weights

__all__ = [
    "WORKERS_ON_DEVICE_ENV",
    "DeviceCopies",
    "EpochMetrics",
    "FeatureCache",
    "NonFiniteLossError",
    "Placement",
    "TrainCheckpoint",
    "TrainEnvironment",
    "TrainHooks",
    "TrainResult",
    "build_model",
    "choose_placement",
    "configure_backends",
    "confusion_matrix",
    "evaluate",
    "feature_cache_bytes",
    "file_sha256",
    "resolve_device",
    "resolve_study_weights",
    "resolve_weights",
    "train",
    "train_epochs",
]
