"""The fine-tuning run: epochs, the freeze/unfreeze schedule, optimizer groups, evaluation.

Knows nothing of Optuna: after every epoch it hands an EpochMetrics to ``on_epoch``, which
may ask it to stop (a pruner, a time limit). The data lives on the device as uint8 tensors
for the whole run; batches are sliced, augmented and normalised there.
"""

from __future__ import annotations

import dataclasses
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from tuner.config import AMP_MODES, TrainConfig
from tuner.data import PreparedData, augment_batch, normalize
from tuner.engine.features import (
    FeatureCache,
    FrozenPrefix,
    forward_frozen,
    forward_suffix,
    pick_features,
    train_features,
)
from tuner.engine.model import (
    head_parameters,
    set_frozen,
    set_train_mode,
    stage_parameters,
)
from tuner.errors import TunerError
from tuner.recipe import OPTIMIZERS, STAGES, TrialParams, frozen_depth_at


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
    """The outcome of a run; ``best_state`` is a CPU copy of the weights at ``best_epoch``."""

    best_accuracy: float
    best_epoch: int
    history: tuple[EpochMetrics, ...]
    best_state: dict[str, Tensor]
    stopped_early: bool  # on_epoch asked to stop


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

    def to_bytes(self) -> bytes:
        """Serialised for an artifact store; read back with :meth:`from_bytes` (weights only)."""
        buffer = io.BytesIO()
        same_best = self.best_epoch == self.epoch  # the usual case: don't store the weights twice
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
            },
            buffer,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> TrainCheckpoint:
        raw = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        best_state = raw["best_state"] or raw["model_state"]
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
        )


class NonFiniteLossError(Exception):
    """The training loss became NaN or infinite: the run diverged and cannot recover.

    On CPU it is raised at the failing step; on CUDA, where checking every step would stall
    the GPU, at the end of that epoch (``step`` is still the first bad step).
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


def resolve_device(spec: str) -> torch.device:
    """``train.device`` -> a device: "auto" (CUDA if available, else CPU), "cpu", "cuda[:i]"."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise TunerError(f"train.device: unknown device {spec!r}; use auto, cpu, cuda or cuda:<i>")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise TunerError(
            f"train.device: {spec} requested but torch sees {torch.cuda.device_count()} CUDA "
            "device(s) here; use auto, cpu or an existing cuda:<i>"
        )
    return device


def lr_factor(schedule: str, epoch: int, epochs: int, step_epochs: int, gamma: float) -> float:
    """The multiplier on every group's base learning rate during ``epoch`` (0-based).

    none: 1; cosine: 0.5 * (1 + cos(pi * epoch / epochs)), so the first epoch runs at the full
    rate and the last above zero; step: gamma ** (epoch // step_epochs).
    """
    if schedule == "none":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    if schedule == "step":
        return gamma ** (epoch // step_epochs)
    raise ValueError(f"unknown lr schedule {schedule!r}")


def train(
    model: nn.Module,
    data: PreparedData,
    params: TrialParams,
    cfg: TrainConfig,
    *,
    augment: str,
    class_weights: Tensor | None,
    device: torch.device,
    seed: int,
    on_epoch: Callable[[EpochMetrics], bool],
    resume: TrainCheckpoint | None = None,
    on_checkpoint: Callable[[TrainCheckpoint], None] | None = None,
    feature_cache: FeatureCache | None = None,
) -> TrainResult:
    """Fine-tune ``model`` (moved to ``device``) for ``cfg.epochs`` epochs; keep the best epoch.

    The optimizer has a head group plus one group per trainable backbone stage (tagged
    ``group["stage"]``; the head's tag is "head"). Stages unfrozen later join it through
    ``add_param_group``, so the head's momentum/Adam state carries on. Same seed, same device:
    same run (bitwise on CPU). Raises NonFiniteLossError when the loss diverges.

    ``on_checkpoint`` gets the full state after every epoch but the last that the run goes
    on from; ``resume`` continues from such a state, and the result is the same as that of
    the uninterrupted run.

    With a ``feature_cache`` (the search passes its worker's), frozen stages run once per
    split instead of every step where their input is fixed (:mod:`tuner.features`), and under
    no_grad where it is not; the result equals the plain run's up to float rounding.
    """
    torch.manual_seed(seed)
    model.to(device)
    train_x, train_y = data.train_images.to(device), data.train_labels.to(device)
    val_x, val_y = data.val_images.to(device), data.val_labels.to(device)
    n = len(train_x)
    if n < 2:
        raise TunerError(
            f"data: the training split has {n} image(s) and training needs at least 2; "
            "raise data.per_class or lower data.val_fraction"
        )
    on_cuda = device.type == "cuda"
    if on_cuda:
        model.to(memory_format=torch.channels_last)  # convs follow their weights' layout
    autocast = _autocast(device, cfg.amp)
    frozen = None
    if feature_cache is not None and feature_cache.max_bytes > 0:
        amp = on_cuda and cfg.amp != "off"
        frozen = FrozenPrefix(
            model, feature_cache, data.fingerprint, cfg.eval_batch_size, autocast, amp
        )
    weight = None if class_weights is None else class_weights.to(device)
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
    augment_generator = torch.Generator(device=device).manual_seed(seed)

    depth = params.freeze_depth
    set_frozen(model, depth)
    optimizer = _make_optimizer(model, params, depth)

    history: list[EpochMetrics] = []
    best_accuracy, best_epoch, best_state = -1.0, -1, {}
    first_epoch = 0
    if resume is not None:
        # rebuild the optimizer's group layout as the run had it, then load its state into it
        for epoch in range(resume.epoch + 1):
            depth = _unfreeze(model, optimizer, params, depth, frozen_depth_at(params, epoch))
        model.load_state_dict(resume.model_state)
        optimizer.load_state_dict(resume.optimizer_state)
        augment_generator.set_state(resume.augment_rng_state)
        history = list(resume.history)
        best_accuracy, best_epoch, best_state = (
            resume.best_accuracy,
            resume.best_epoch,
            resume.best_state,
        )
        first_epoch = resume.epoch + 1
    stopped_early = False
    for epoch in range(first_epoch, cfg.epochs):
        started = time.perf_counter()
        depth = _unfreeze(model, optimizer, params, depth, frozen_depth_at(params, epoch))
        set_train_mode(model, depth)
        factor = lr_factor(
            cfg.lr_schedule, epoch, cfg.epochs, cfg.lr_step_epochs, cfg.lr_step_gamma
        )
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor

        # one pass over the shuffled training split
        same_depth = [frozen_depth_at(params, e) for e in range(epoch, cfg.epochs)].count(depth)
        cached = train_features(frozen, train_x, depth, augment, same_depth)
        order = torch.randperm(n, generator=_epoch_generator(seed, epoch)).to(device)
        step_losses: list[Tensor] = []
        # stop before a final batch of one image: BatchNorm cannot train on it
        for start in range(0, n - 1, params.batch_size):
            batch = order[start : start + params.batch_size]
            if cached is not None:
                features = pick_features(cached, batch, augment_generator)
                with autocast:
                    loss = loss_fn(forward_suffix(model, features, depth), train_y[batch])
            else:
                x = augment_batch(train_x[batch], augment, augment_generator)
                with autocast:
                    logits = model(x) if frozen is None else forward_frozen(model, x, depth)
                    loss = loss_fn(logits, train_y[batch])
            if not on_cuda and not torch.isfinite(loss):  # free on CPU; CUDA checks per epoch
                raise NonFiniteLossError(epoch, len(step_losses))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            step_losses.append(loss.detach())
        losses = torch.stack(step_losses).float()
        bad_steps = torch.nonzero(~torch.isfinite(losses))
        if len(bad_steps):
            raise NonFiniteLossError(epoch, int(bad_steps[0]))

        # evaluate, keep the best weights, let the caller decide whether to go on
        val_features = None
        if frozen is not None and depth > 0:
            val_features = frozen.features("val", val_x, depth, amp=False, prepare=normalize)
        if val_features is None:
            accuracy, _ = evaluate(model, val_x, val_y, device, cfg.eval_batch_size)
        else:
            accuracy = _evaluate_features(model, val_features, val_y, depth, cfg.eval_batch_size)
        metrics = EpochMetrics(
            epoch=epoch,
            train_loss=losses.mean().item(),
            val_accuracy=accuracy,
            seconds=time.perf_counter() - started,
            frozen_depth=depth,
            head_lr=optimizer.param_groups[0]["lr"],
        )
        history.append(metrics)
        if accuracy > best_accuracy:
            best_accuracy, best_epoch = accuracy, epoch
            best_state = _cpu_copy(model.state_dict())
        if on_epoch(metrics):
            stopped_early = True
            break
        if on_checkpoint is not None and epoch < cfg.epochs - 1:
            on_checkpoint(
                TrainCheckpoint(
                    epoch=epoch,
                    model_state=_cpu_copy(model.state_dict()),
                    optimizer_state=optimizer.state_dict(),
                    augment_rng_state=augment_generator.get_state(),
                    best_accuracy=best_accuracy,
                    best_epoch=best_epoch,
                    best_state=best_state,
                    history=tuple(history),
                )
            )
    return TrainResult(best_accuracy, best_epoch, tuple(history), best_state, stopped_early)


@torch.no_grad()
def evaluate(
    model: nn.Module, images_uint8: Tensor, labels: Tensor, device: torch.device, batch_size: int
) -> tuple[float, Tensor]:
    """Accuracy (0..1) and the predicted labels (CPU) of ``model`` in eval mode, in float32.

    Images are uint8 on any device; each batch is moved to ``device`` and normalised there.
    """
    if len(labels) == 0:
        raise ValueError("cannot evaluate on zero images")
    model.eval()
    predictions = _predict(lambda x: model(normalize(x.to(device))), images_uint8, batch_size)
    accuracy = (predictions == labels.cpu()).float().mean().item()
    return accuracy, predictions


def confusion_matrix(labels: Tensor, predictions: Tensor, classes: int) -> Tensor:
    """[classes, classes] counts on the CPU: rows the true class, columns the predicted one."""
    labels, predictions = labels.cpu(), predictions.cpu()
    matrix = torch.zeros(classes, classes, dtype=torch.long)
    matrix.index_put_((labels, predictions), torch.ones_like(labels), accumulate=True)
    return matrix


@torch.no_grad()
def _evaluate_features(
    model: nn.Module, features: Tensor, labels: Tensor, depth: int, batch_size: int
) -> float:
    """:func:`evaluate`'s accuracy from cached prefix outputs (see :mod:`tuner.features`)."""
    model.eval()
    predictions = _predict(lambda batch: forward_suffix(model, batch, depth), features, batch_size)
    return (predictions == labels.cpu()).float().mean().item()


def _predict(forward: Callable[[Tensor], Tensor], inputs: Tensor, batch_size: int) -> Tensor:
    """CPU predicted labels of ``forward`` over ``inputs`` in batches (one host sync)."""
    return torch.cat(
        [
            forward(inputs[start : start + batch_size]).argmax(dim=1)
            for start in range(0, len(inputs), batch_size)
        ]
    ).cpu()


def _unfreeze(
    model: nn.Module, optimizer: torch.optim.Optimizer, params: TrialParams, depth: int, new: int
) -> int:
    """Unfreeze down to ``new`` frozen stages; they join the optimizer, deepest first.

    The existing groups keep their state (momentum, Adam moments). Returns the new depth.
    """
    if new < depth:
        set_frozen(model, new)
        for index in reversed(range(new, depth)):
            optimizer.add_param_group(_stage_group(model, index, params))
        return new
    return depth


def _cpu_copy(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def _autocast(device: torch.device, amp: str) -> torch.autocast:
    """bfloat16 autocast on CUDA unless amp is off (bf16 needs no loss scaling); none on CPU."""
    if amp not in AMP_MODES:
        raise TunerError(f"train.amp: unknown value {amp!r}; use one of {', '.join(AMP_MODES)}")
    enabled = device.type == "cuda" and amp != "off"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator for this epoch's shuffle, so the order is the same on every device."""
    mixed = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed))


def _make_optimizer(
    model: nn.Module, params: TrialParams, frozen_depth: int
) -> torch.optim.Optimizer:
    """The head group, then one group per trainable stage, deepest first."""
    if params.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {params.optimizer!r}")
    info = OPTIMIZERS[params.optimizer]
    groups = [_group(head_parameters(model), params.head_lr, "head")]
    groups += [_stage_group(model, i, params) for i in reversed(range(frozen_depth, len(STAGES)))]
    # fused: one kernel for the whole update, on CPU as on CUDA (torch picks it by default on
    # neither); on a 2-core CPU it cuts Adam's share of a ResNet-18 step from 40 to 9 ms
    return getattr(torch.optim, info.torch_class)(
        groups,
        lr=params.head_lr,
        weight_decay=params.weight_decay,
        fused=True,
        **dict(info.defaults),
    )


def _stage_group(model: nn.Module, stage_index: int, params: TrialParams) -> dict:
    stage = STAGES[stage_index]
    if params.backbone_lr is None:
        raise ValueError(f"stage {stage} trains but backbone_lr is None")
    return _group(stage_parameters(model, stage_index), params.backbone_lr, stage)


def _group(parameters: list[nn.Parameter], lr: float, stage: str) -> dict:
    """An optimizer group that remembers its unscheduled lr, since the schedule rewrites ``lr``."""
    return {"params": parameters, "lr": lr, "base_lr": lr, "stage": stage}
