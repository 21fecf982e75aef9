"""tuner: hyperparameter search for fine-tuning pretrained torchvision ResNets, on Optuna.

The Python API is small: ``load_model(dir)`` for an exported model, and ``TunerError``
for every mistake a user can fix. Everything else is reached through the ``tuner`` CLI.
"""

from typing import Any

from tuner.errors import TunerError

__all__ = ["LoadedModel", "TunerError", "load_model"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `tuner --help` and config errors don't wait for torch to import.
    if name in ("LoadedModel", "load_model"):
        from tuner import results

        return getattr(results, name)
    raise AttributeError(f"module 'tuner' has no attribute {name!r}")
