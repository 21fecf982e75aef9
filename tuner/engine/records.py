"""What a training run hands out: per-epoch metrics, the result, the resumable checkpoint.

Plain frozen records, so the search layer can store and compare them without knowing how a
run works; :class:`TrainCheckpoint` also defines the serialised form kept in artifact stores.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch did; handed to ``on_epoch`` and kept in the history."""

    epoch: int  # 0-based
    train_loss: float  # mean over the epoch's steps
    val_accuracy: float  # 0..1
    seconds: float  # wall time of training plus evaluation
    frozen_depth: int  # how many stages were frozen during this epoch
    head_lr: float  # the head's learning rate this epoch, after the schedule


@dataclass(frozen=True)
class TrainResult:
    """The outcome of a run; ``best_state`` is a CPU copy of the weights at ``best_epoch``,
    ``best_predictions`` their predicted labels on the validation images (CPU, in order)."""

    best_accuracy: float
    best_epoch: int
    history: tuple[EpochMetrics, ...]
    best_state: dict[str, Tensor]
    stopped_early: bool  # on_epoch asked to stop
    best_predictions: Tensor | None = None  # None only after resuming an older checkpoint


@dataclass(frozen=True)
class TrainCheckpoint:
    """Everything needed to continue a run after ``epoch`` as if it had never stopped.

    The optimizer state carries its parameter-group layout (head, then stages in the order
    they were unfrozen), so resuming rebuilds the same groups before loading it.
    """

    epoch: int  # the last finished epoch, 0-based
    model_state: dict[str, Tensor]
    optimizer_state: dict
    augment_rng_state: Tensor
    best_accuracy: float
    best_epoch: int
    best_state: dict[str, Tensor]
    history: tuple[EpochMetrics, ...]
    best_predictions: Tensor | None = None
    ema_state: dict | None = None  # the weight average (tuner.engine.ema), when the run keeps one

    def to_bytes(self) -> bytes:
        """Serialised for an artifact store; read back with :meth:`from_bytes` (weights only)."""
        buffer = io.BytesIO()
        # the usual case: the best epoch is this one, whose evaluated weights (the average's,
        # when the run keeps one) are stored already; don't store them twice
        same_best = self.best_epoch == self.epoch
        torch.save(
            {
                "epoch": self.epoch,
                "model_state": self.model_state,
                "optimizer_state": self.optimizer_state,
                "augment_rng_state": self.augment_rng_state,
                "best_accuracy": self.best_accuracy,
                "best_epoch": self.best_epoch,
                "best_state": {} if same_best else self.best_state,
                "history": [dataclasses.asdict(m) for m in self.history],
                "best_predictions": self.best_predictions,
                "ema_state": self.ema_state,
            },
            buffer,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> TrainCheckpoint:
        raw = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        ema_state = raw.get("ema_state")
        evaluated = ema_state["shadow"] if ema_state else raw["model_state"]
        best_state = raw["best_state"] or evaluated
        history = tuple(EpochMetrics(**m) for m in raw["history"])
        return cls(
            raw["epoch"],
            raw["model_state"],
            raw["optimizer_state"],
            raw["augment_rng_state"],
            raw["best_accuracy"],
            raw["best_epoch"],
            best_state,
            history,
            raw.get("best_predictions"),  # absent from checkpoints written before it was kept
            ema_state,
        )


class NonFiniteLossError(Exception):
    """The training loss became NaN or infinite: the run diverged and cannot recover.

    Raised at the end of that epoch, since checking every step would stall a GPU; ``step`` is
    the first bad step.
    """

    def __init__(self, epoch: int, step: int) -> None:
        super().__init__(epoch, step)  # args stay (epoch, step) so it survives pickling
        self.epoch = epoch
        self.step = step

    def __str__(self) -> str:
        return (
            f"training loss is NaN or infinite at epoch {self.epoch}, step {self.step}; "
            "the learning rate is probably too high"
        )


def cpu_copy(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A detached CPU snapshot of a state dict, safe to keep while training goes on."""
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
