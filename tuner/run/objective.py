"""Optuna glue only: sample, train, report and prune, keep the checkpoint, record attributes."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.artifacts import upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from safetensors.torch import save_file

from tuner.engine import (
    DeviceCopies,
    EpochMetrics,
    NonFiniteLossError,
    TrainCheckpoint,
    TrainEnvironment,
    TrainHooks,
    TrainResult,
    build_model,
    evaluate,
    train,
)
from tuner.errors import DeviceFailedError
from tuner.recipe import TrialParams
from tuner.run import device_memory
from tuner.run.host import SearchContext
from tuner.run.signals import raise_if_stop_requested
from tuner.run.trial_figures import trial_figures
from tuner.search import attrs, notes
from tuner.search import study as study_mod
from tuner.search.space import sample
from tuner.search.storage import ArtifactStore


def make_objective(context: SearchContext) -> Callable[[optuna.Trial], float]:
    """The objective: a trial's value is its best validation accuracy over the epochs.

    One per worker: its trials share the worker's resident data on the device and its record
    of recipes that ran out of memory; after each, the device memory is handed back.
    """
    worker = _WorkerState(DeviceCopies(), device_memory.OutOfMemoryLog())

    def objective(trial: optuna.Trial) -> float:
        reason, worker.params = None, None
        try:
            return _run_trial(trial, context, worker)
        except optuna.TrialPruned:
            raise
        except torch.OutOfMemoryError as exc:
            if worker.params is None:  # before the recipe was sampled: not the recipe's doing
                raise
            reason = device_memory.out_of_memory_reason(worker.params, exc, context.device)
            worker.memory.record(worker.params, trial.number)
        except DeviceFailedError as exc:
            trial.set_user_attr(attrs.FAIL_REASON, str(exc)[:500])
            raise
        except Exception as exc:
            # Optuna 5 keeps no failure reason; record one for status and the worker's stop.
            trial.set_user_attr(attrs.FAIL_REASON, f"{type(exc).__name__}: {exc}"[:500])
            raise
        finally:
            device_memory.hand_back(context.device)
        # out of memory: raised here, outside the handler, so no traceback holds its tensors
        trial.set_user_attr(attrs.FAIL_REASON, reason[:500])
        raise TrialOutOfMemory(reason)

    return objective


class TrialOutOfMemory(RuntimeError):
    """The trial's recipe did not fit in the device's memory (its reason says by how much)."""


@dataclass
class _WorkerState:
    """What one worker's trials share beyond the :class:`SearchContext`."""

    copies: DeviceCopies
    memory: device_memory.OutOfMemoryLog
    params: TrialParams | None = None  # the running trial's recipe


def _run_trial(trial: optuna.Trial, context: SearchContext, worker: _WorkerState) -> float:
    """Sample, build, train with per-epoch report/prune, keep the checkpoint, return the value.

    A retry of a trial whose worker died carries the dead trial's user attributes: its
    origin (which fixes the training seed) and its last epoch checkpoint, which it resumes
    from. A trial enqueued with a ``seed`` attribute trains with that seed instead. The starting
    model is drawn from the study's seed, the same for every trial (:func:`attrs.init_seed`).
    """
    config = context.config
    params, origin, seed, init_seed = _begin(trial, context)
    worker.params = params
    refusal = worker.memory.refusal(params)
    if refusal is not None:
        # pruned, not failed: TPE learns to avoid it (it ignores failures), and no streak builds
        trial.set_user_attr(attrs.STOPPED, refusal)
        raise optuna.TrialPruned(refusal)
    device_memory.start_trial(context.device)
    torch.manual_seed(init_seed)  # the new head (and a random-init backbone) are drawn here
    model = build_model(params.arch, context.data.num_classes, context.weights[params.arch])
    reporter = _TrialReporter(trial, context, origin, _load_resume(trial, context))
    weights = context.data.class_weights() if config.data.class_weights == "auto" else None
    environment = TrainEnvironment(
        device=context.device,
        seed=seed,
        augment=config.data.augment,
        class_weights=weights,
        feature_cache=context.feature_cache,
        resident=context.placement is None or context.placement.resident,
        device_copies=worker.copies,
    )
    hooks = TrainHooks(reporter.on_epoch, reporter.on_checkpoint if config.search.resume else None)
    stopped = False
    try:
        result = train(
            model, context.data, params, config.train, environment, hooks, resume=reporter.resume
        )
        trial.set_user_attr(attrs.BEST_EPOCH, result.best_epoch)
        if result.stopped_early:
            why = f"pruned after epoch {reporter.history[-1].epoch}"
            trial.set_user_attr(attrs.STOPPED, why)
            raise optuna.TrialPruned(why)
        predictions = _best_predictions(result, context, model)
        correct = (predictions == context.data.val_labels).numpy()
        trial.set_user_attr(attrs.VAL_CORRECT, attrs.record_val_correct(correct))  # for pairing
        _keep_checkpoint(trial, result, predictions, context)
        return result.best_accuracy
    except NonFiniteLossError as exc:
        trial.set_user_attr(attrs.STOPPED, f"non-finite loss: {exc}")
        raise optuna.TrialPruned(f"non-finite loss: {exc}") from None
    except KeyboardInterrupt:
        stopped = True  # the worker queues a retry that resumes from it (leave_for_retry)
        raise
    except Exception as exc:
        if not device_memory.is_device_failure(exc):
            raise
        stopped = True  # as for a stop: a fresh process retries it from its checkpoint
        raise device_memory.device_failed(exc) from exc
    finally:
        peak = device_memory.peak_reserved(context.device)
        if peak is not None:
            trial.set_user_attr(device_memory.PEAK_ATTR, peak)
        # Last, after the trial's checkpoint and figures: a worker killed before Optuna
        # stores the outcome leaves the resume checkpoint its trial's retry resumes from.
        if not stopped:
            reporter.remove_resume_checkpoints()


def _begin(trial: optuna.Trial, context: SearchContext) -> tuple[TrialParams, int, int, int]:
    """Sample the recipe and record what the trial is: (params, origin trial, training seed,
    init seed). Trials share the init seed (one starting model) and differ in the training seed."""
    params = sample(trial, context.config.space, context.config.train.epochs)
    origin = trial.user_attrs.get(attrs.ORIGIN, trial.number)
    trial.set_user_attr(attrs.ORIGIN, origin)
    trial.set_user_attr(attrs.PARAMS, dataclasses.asdict(params))
    trial.set_user_attr(attrs.WORKER, _describe_worker(context))
    init_seed = attrs.init_seed(trial.user_attrs, context.config.train.seed)
    seed = attrs.train_seed(trial.user_attrs, context.config.train.seed, trial.number)
    trial.set_user_attr(attrs.INIT_SEED, init_seed)
    trial.set_user_attr(attrs.SEED, seed)
    return params, origin, seed, init_seed


class _TrialReporter:
    """The engine's hooks for one trial: report and maybe prune each epoch, keep resume points.

    Only the newest resume checkpoint is kept; the ones this trial (or the dead trial it
    retries) wrote are removed when it ends.
    """

    def __init__(
        self,
        trial: optuna.Trial,
        context: SearchContext,
        origin: int,
        resume: TrainCheckpoint | None,
    ) -> None:
        self._trial, self._context, self._origin = trial, context, origin
        self.resume = resume
        self.history: list[EpochMetrics] = list(resume.history) if resume else []
        recorded = trial.user_attrs.get(attrs.RESUME)
        self._saved: list[str] = [recorded["artifact"]] if recorded else []
        if resume is not None:
            trial.set_user_attr(attrs.RESUMED_AFTER_EPOCH, resume.epoch)
            for metrics in self.history:  # the pruner compares this trial's whole curve
                trial.report(metrics.val_accuracy, metrics.epoch)

    def on_epoch(self, metrics: EpochMetrics) -> bool:
        """Record and report the epoch; ask the pruner whether to stop, except after the last.

        A trial that trained all its epochs is complete: pruning it then would save nothing
        and throw away its value, its checkpoint and its place in the ranking.
        """
        raise_if_stop_requested()
        self.history.append(metrics)
        _record_curves(self._trial, self.history)
        self._trial.report(metrics.val_accuracy, metrics.epoch)
        last = metrics.epoch == self._context.config.train.epochs - 1
        return not last and self._trial.should_prune()

    def on_checkpoint(self, checkpoint: TrainCheckpoint) -> None:
        study = self._trial.study.study_name
        name = f"resume-{study}-trial{self._origin}-epoch{checkpoint.epoch}.pt"
        self._context.store.write(name, io.BytesIO(checkpoint.to_bytes()))
        # recorded only once fully written: a worker killed mid-write leaves the old one valid
        self._trial.set_user_attr(attrs.RESUME, {"artifact": name, "epoch": checkpoint.epoch})
        self.remove_resume_checkpoints()
        self._saved = [name]

    def remove_resume_checkpoints(self) -> None:
        _remove_artifacts(self._context.store, self._saved)


def _describe_worker(context: SearchContext) -> dict[str, object]:
    worker = context.worker
    device = str(context.device)
    if worker.gpu is not None:  # a number, or a UUID that names itself ("GPU-...", "MIG-...")
        named = worker.gpu.startswith(("GPU-", "MIG-"))
        device += f" ({worker.gpu})" if named else f" (GPU {worker.gpu})"
    data = "resident" if context.placement is None else context.placement.mode
    return {
        "host": worker.host,
        "worker": worker.name,
        "pid": worker.pid,
        "pid_namespace": worker.pid_namespace,
        "device": device,
        "data": data,
    }


def _load_resume(trial: optuna.Trial, context: SearchContext) -> TrainCheckpoint | None:
    """The dead trial's last epoch checkpoint, if this trial retries one and it can be read."""
    recorded = trial.user_attrs.get(attrs.RESUME)
    if not recorded or not context.config.search.resume:
        return None
    try:
        with context.store.open_reader(recorded["artifact"]) as reader:
            return TrainCheckpoint.from_bytes(reader.read())
    except (ArtifactNotFound, OSError, RuntimeError) as exc:
        trial.set_user_attr(attrs.RESUME_FAILED, f"{type(exc).__name__}: {exc}"[:300])
        return None


def _remove_artifacts(store: ArtifactStore, names: list[str]) -> None:
    for name in names:
        with contextlib.suppress(ArtifactNotFound, FileNotFoundError):
            store.remove(name)


def _record_curves(trial: optuna.Trial, history: list[EpochMetrics]) -> None:
    trial.set_user_attr(attrs.VAL_ACCURACY, [m.val_accuracy for m in history])
    trial.set_user_attr(attrs.TRAIN_LOSS, [m.train_loss for m in history])
    trial.set_user_attr(attrs.EPOCH_SECONDS, [round(m.seconds, 3) for m in history])
    trial.set_user_attr(attrs.FROZEN_DEPTH, [m.frozen_depth for m in history])


def _best_predictions(
    result: TrainResult, context: SearchContext, model: torch.nn.Module
) -> torch.Tensor:
    """The best epoch's predicted validation labels: kept by the run, or (for a run resumed
    from a checkpoint that predates keeping them) from its weights once more."""
    if result.best_predictions is not None:
        return result.best_predictions
    model.load_state_dict(result.best_state)
    data = context.data
    with torch.no_grad():
        return evaluate(
            model, data.val_images, data.val_labels, context.device,
            context.config.train.eval_batch_size,
        )[1]  # fmt: skip


def _keep_checkpoint(
    trial: optuna.Trial, result: TrainResult, predictions: torch.Tensor, context: SearchContext
) -> None:
    """Upload the best-epoch weights and figures if this trial ranks in the top k, then evict.

    Only complete trials keep checkpoints; a trial that would not enter the top k
    uploads nothing, so the store never holds more than k checkpoints for long. The
    learning curve and confusion matrix go with the checkpoint, for the dashboard.
    """
    study = trial.study
    keep = context.config.search.keep_checkpoints
    better = [t for t in study_mod.ranked_trials(study) if (t.value or 0.0) >= result.best_accuracy]
    if len(better) >= keep:
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"trial-{trial.number}-epoch-{result.best_epoch}.safetensors"
        save_file({k: v.contiguous() for k, v in result.best_state.items()}, str(path))
        artifact_id = upload_artifact(
            artifact_store=context.store, file_path=str(path), study_or_trial=trial
        )
        figures = trial_figures(trial.number, result, predictions, context.data, Path(tmp))
        for figure in figures:
            upload_artifact(
                artifact_store=context.store, file_path=str(figure), study_or_trial=trial
            )
    trial.set_user_attr(attrs.CHECKPOINT, artifact_id)
    # This trial is not COMPLETE yet, so it holds one of the k places without being ranked.
    for evicted in study_mod.evict_checkpoints(study, context.store, keep - 1):
        notes.write_trial_note(study, evicted, context.config)  # "checkpoint removed"
