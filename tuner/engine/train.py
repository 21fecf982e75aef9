"""The fine-tuning run: setup, resume, the per-epoch freeze/unfreeze and lr schedule, the best.

Knows nothing of Optuna: after every epoch it hands an EpochMetrics to ``hooks.on_epoch``,
which may ask it to stop (a pruner, a time limit). The data lives on the device as uint8
tensors for the whole run, or is streamed from the host's memory map (``env.resident``,
:mod:`tuner.engine.placement`); :mod:`tuner.engine.epoch` batches, augments and steps, and
:mod:`tuner.engine.evaluate` validates.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from tuner.config import TrainConfig
from tuner.data import Mixing, PreparedData
from tuner.engine.device import amp_enabled, autocast_for
from tuner.engine.ema import WeightEma
from tuner.engine.epoch import BatchSource, train_one_epoch
from tuner.engine.evaluate import validate as validate_split
from tuner.engine.features import FeatureCache, FrozenPrefix
from tuner.engine.loss import make_loss
from tuner.engine.model import set_frozen, set_train_mode
from tuner.engine.optim import make_optimizer, schedule_lr, unfreeze
from tuner.engine.records import EpochMetrics, TrainCheckpoint, TrainResult, cpu_copy
from tuner.engine.transfer import DeviceCopies, image_source
from tuner.errors import TunerError
from tuner.recipe import TrialParams, frozen_depth_at


@dataclass(frozen=True)
class TrainEnvironment:
    """Where a run trains and on what, beyond the trial's recipe and the study's settings.

    ``feature_cache`` is the worker's (shared by its trials); with it, frozen stages run once
    per split instead of every step where their input is fixed (:mod:`tuner.engine.features`),
    and under no_grad where it is not: the result equals the plain run's up to float rounding.
    """

    device: torch.device
    seed: int
    augment: str  # one of config.AUGMENTATIONS
    class_weights: Tensor | None = None  # per-class loss weights; None: all equal
    feature_cache: FeatureCache | None = None
    resident: bool = True  # the data on the device; False: streamed (tuner.engine.placement)
    device_copies: DeviceCopies | None = None  # the worker's resident copies, kept across trials


def restore_generator(generator: torch.Generator, state: Tensor, epoch: int) -> bool:
    """Load a checkpoint's augmentation generator state; False when it came from another kind
    of device (a CPU generator's state is 5,056 bytes, a CUDA one's 16, and neither loads
    into the other), in which case the generator is reseeded from its own seed and the epoch:
    a retry that lands on the other kind of device goes on, with other augmentation draws
    from there on (it could not repeat them anyway: the kernels differ)."""
    if state.numel() == generator.get_state().numel():
        generator.set_state(state)
        return True
    generator.manual_seed(generator.initial_seed() + epoch + 1)
    return False


def _go_on(metrics: EpochMetrics) -> bool:
    return False


@dataclass(frozen=True)
class TrainHooks:
    """How a run reports back, so that it need not know who listens (a pruner, a store).

    ``on_epoch`` gets every epoch's metrics and returns True to stop the run;
    ``on_checkpoint`` gets the full state after every epoch but the last that it goes on from.
    """

    on_epoch: Callable[[EpochMetrics], bool] = _go_on
    on_checkpoint: Callable[[TrainCheckpoint], None] | None = None


def train(
    model: nn.Module,
    data: PreparedData,
    params: TrialParams,
    cfg: TrainConfig,
    env: TrainEnvironment,
    hooks: TrainHooks,
    resume: TrainCheckpoint | None = None,
) -> TrainResult:
    """Fine-tune ``model`` (moved to ``env.device``) for ``cfg.epochs`` epochs; keep the best.

    Same seed, same device: same run (bitwise on CPU). ``resume`` continues from a checkpoint
    that ``hooks.on_checkpoint`` got, and the result is that of the uninterrupted run.
    Raises NonFiniteLossError when the loss diverges.
    """
    run = TrainingRun(model, data, params, cfg, env)
    if resume is not None:
        run.resume_from(resume)
    for epoch in range(run.next_epoch, cfg.epochs):
        metrics = run.run_epoch(epoch)
        if hooks.on_epoch(metrics):
            return run.result(stopped_early=True)
        if hooks.on_checkpoint is not None and epoch < cfg.epochs - 1:
            hooks.on_checkpoint(run.checkpoint(epoch))
    return run.result(stopped_early=False)


def train_epochs(
    model: nn.Module,
    data: PreparedData,
    params: TrialParams,
    cfg: TrainConfig,
    env: TrainEnvironment,
    epochs: int,
    on_epoch: Callable[[EpochMetrics], object] = _go_on,
) -> tuple[EpochMetrics, ...]:
    """The first ``epochs`` epochs of the recipe's ``cfg.epochs``-epoch run, without validation.

    A refit: the schedule (unfreezing, learning rates) is exactly the run's, so stopping at a
    trial's best epoch reproduces that trial's recipe on more data; ``model`` ends with the
    last epoch's weights (their average, when the recipe keeps one: what a run evaluates),
    and ``val_accuracy`` is NaN in the metrics ``on_epoch`` gets.
    """
    run = TrainingRun(model, data, params, cfg, env)
    history = []
    for epoch in range(epochs):
        history.append(run.run_epoch(epoch, validate=False))
        on_epoch(history[-1])
    if run.ema is not None:
        model.load_state_dict(run.ema.shadow)
    return tuple(history)


class TrainingRun:
    """One run's state: the model on its device, optimizer, batches, history and best epoch.

    The optimizer starts with the head group plus one group per trainable stage; the stages
    the schedule unfreezes join it at the start of their epoch (:mod:`tuner.engine.optim`).
    With ``params.ema`` on, a weight average follows every step and is what is validated
    and kept as best (:mod:`tuner.engine.ema`).
    """

    def __init__(
        self,
        model: nn.Module,
        data: PreparedData,
        params: TrialParams,
        cfg: TrainConfig,
        env: TrainEnvironment,
    ) -> None:
        torch.manual_seed(env.seed)
        device = env.device
        model.to(device)
        if len(data.train_labels) < 2:
            raise TunerError(
                f"data: the training split has {len(data.train_labels)} image(s) and training "
                "needs at least 2; raise data.per_class or lower data.val_fraction"
            )
        copies = env.device_copies
        train_x = image_source(data.train_images, device, resident=env.resident, copies=copies)
        self.val_x = image_source(data.val_images, device, resident=env.resident, copies=copies)
        train_y, self.val_y = data.train_labels.to(device), data.val_labels.to(device)
        if device.type == "cuda":
            model.to(memory_format=torch.channels_last)  # convs follow their weights' layout
        self.model, self.params, self.cfg = model, params, cfg
        self.autocast = autocast_for(device, cfg.amp)
        self.frozen = self._frozen_prefix(data, env)
        weight = None if env.class_weights is None else env.class_weights.to(device)
        self.loss_fn = make_loss(weight, params.label_smoothing)
        generator = torch.Generator(device=device).manual_seed(env.seed)
        mixing = Mixing(params.mixup, params.cutmix, data.num_classes) if params.mixes else None
        self.batches = BatchSource(
            train_x, train_y, env.augment, generator, self.frozen, env.seed, params.batch_size,
            mixing,
        )  # fmt: skip
        self.depth = params.freeze_depth
        set_frozen(model, self.depth)
        self.optimizer = make_optimizer(model, params, self.depth)
        self.ema = WeightEma(model, params.ema) if params.ema else None
        self.history: list[EpochMetrics] = []
        self.best_accuracy, self.best_epoch, self.best_state = -1.0, -1, {}
        self.best_predictions: torch.Tensor | None = None
        self.next_epoch = 0

    def resume_from(self, checkpoint: TrainCheckpoint) -> None:
        """Rebuild the optimizer's group layout as the run had it, then load the state into it."""
        for epoch in range(checkpoint.epoch + 1):
            self._unfreeze_for(epoch)
        self.model.load_state_dict(checkpoint.model_state)
        self.optimizer.load_state_dict(checkpoint.optimizer_state)
        restore_generator(self.batches.generator, checkpoint.augment_rng_state, checkpoint.epoch)
        if self.ema is not None and checkpoint.ema_state is not None:
            self.ema.load_state_dict(checkpoint.ema_state)
        self.history = list(checkpoint.history)
        self.best_accuracy = checkpoint.best_accuracy
        self.best_epoch = checkpoint.best_epoch
        self.best_state = checkpoint.best_state
        self.best_predictions = checkpoint.best_predictions
        self.next_epoch = checkpoint.epoch + 1

    def run_epoch(self, epoch: int, validate: bool = True) -> EpochMetrics:
        """Schedule, train and validate ``epoch``; keep it in the history and maybe as best.

        Without ``validate`` (a refit) the epoch only trains: its accuracy is NaN.
        """
        started = time.perf_counter()
        self._unfreeze_for(epoch)
        set_train_mode(self.model, self.depth, self.params.bn_policy)
        schedule_lr(self.optimizer, self.cfg, epoch, self.params.warmup_epochs)
        batches = self.batches.epoch(self.model, epoch, self.depth, self._epochs_at_depth(epoch))
        train_loss = train_one_epoch(
            self.model,
            batches,
            self.loss_fn,
            self.optimizer,
            self.autocast,
            epoch=epoch,
            grad_clip=self.cfg.grad_clip,
            after_step=None if self.ema is None else partial(self.ema.update, self.model),
        )
        accuracy, predictions, state = math.nan, None, None
        if validate:
            with self._evaluated_weights():
                accuracy, predictions = validate_split(
                    self.model,
                    self.val_x,
                    self.val_y,
                    self.depth,
                    self.frozen,
                    self.cfg.eval_batch_size,
                )
                if accuracy > self.best_accuracy:
                    state = cpu_copy(self.model.state_dict())
        metrics = EpochMetrics(
            epoch=epoch,
            train_loss=train_loss,
            val_accuracy=accuracy,
            seconds=time.perf_counter() - started,
            frozen_depth=self.depth,
            head_lr=self.optimizer.param_groups[0]["lr"],
        )
        self.history.append(metrics)
        if state is not None:
            self.best_accuracy, self.best_epoch = accuracy, epoch
            self.best_state = state
            self.best_predictions = predictions
        return metrics

    def _evaluated_weights(self) -> contextlib.AbstractContextManager[None]:
        """The weights a run is judged and kept by: the average when it keeps one."""
        return contextlib.nullcontext() if self.ema is None else self.ema.applied(self.model)

    def checkpoint(self, epoch: int) -> TrainCheckpoint:
        """The state after ``epoch``, from which :meth:`resume_from` goes on identically."""
        return TrainCheckpoint(
            epoch=epoch,
            model_state=cpu_copy(self.model.state_dict()),
            optimizer_state=self.optimizer.state_dict(),
            augment_rng_state=self.batches.generator.get_state(),
            best_accuracy=self.best_accuracy,
            best_epoch=self.best_epoch,
            best_state=self.best_state,
            history=tuple(self.history),
            best_predictions=self.best_predictions,
            ema_state=None if self.ema is None else self.ema.state_dict(),
        )

    def result(self, *, stopped_early: bool) -> TrainResult:
        history = tuple(self.history)
        return TrainResult(
            self.best_accuracy,
            self.best_epoch,
            history,
            self.best_state,
            stopped_early,
            self.best_predictions,
        )

    def _unfreeze_for(self, epoch: int) -> None:
        """The fine-tuning hook: the stages the schedule unfreezes by ``epoch`` start training."""
        new = frozen_depth_at(self.params, epoch)
        self.depth = unfreeze(self.model, self.optimizer, self.params, self.depth, new, epoch)

    def _epochs_at_depth(self, epoch: int) -> int:
        """How many epochs from ``epoch`` on train at the current depth (cache builds pay off)."""
        depths = [frozen_depth_at(self.params, e) for e in range(epoch, self.cfg.epochs)]
        return depths.count(self.depth)

    def _frozen_prefix(self, data: PreparedData, env: TrainEnvironment) -> FrozenPrefix | None:
        """The run's view of the feature cache; None when there is none or it has no room."""
        cache = env.feature_cache
        if cache is None or cache.max_bytes <= 0:
            return None
        amp = amp_enabled(env.device, self.cfg.amp)
        return FrozenPrefix(
            self.model,
            self.params.arch,
            cache,
            data.fingerprint,
            self.cfg.eval_batch_size,
            self.autocast,
            amp,
        )
