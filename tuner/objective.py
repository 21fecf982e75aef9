"""Optuna glue only: sample, train, report and prune, keep the checkpoint, record attributes."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from safetensors.torch import save_file

from tuner import study as study_mod
from tuner.config import StudyConfig
from tuner.data import PreparedData
from tuner.model import ResolvedWeights, build_model
from tuner.signals import raise_if_stop_requested
from tuner.space import sample
from tuner.train import EpochMetrics, NonFiniteLossError, TrainResult, train


@dataclass(frozen=True)
class SearchContext:
    """What every trial of one worker shares: loaded once, reused for each trial."""

    config: StudyConfig
    data: PreparedData
    weights: ResolvedWeights
    device: torch.device
    store: FileSystemArtifactStore


def make_objective(context: SearchContext) -> Callable[[optuna.Trial], float]:
    """The objective: a trial's value is its best validation accuracy over the epochs."""

    def objective(trial: optuna.Trial) -> float:
        try:
            return _run_trial(trial, context)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            # Optuna 5 keeps no failure reason; record one for status and the worker's stop.
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}"[:500])
            raise

    return objective


def _run_trial(trial: optuna.Trial, context: SearchContext) -> float:
    """Sample, build, train with per-epoch report/prune, keep the checkpoint, return the value."""
    config = context.config
    params = sample(trial, config.space)
    trial.set_user_attr("params", dataclasses.asdict(params))
    seed = config.train.seed + trial.number
    torch.manual_seed(seed)  # the new head (and a random-init backbone) are drawn here
    model = build_model(config.model.arch, context.data.num_classes, context.weights)
    history: list[EpochMetrics] = []

    def on_epoch(metrics: EpochMetrics) -> bool:
        raise_if_stop_requested()
        history.append(metrics)
        _record_curves(trial, history)
        trial.report(metrics.val_accuracy, metrics.epoch)
        return trial.should_prune()

    weights = context.data.class_weights() if config.data.class_weights == "auto" else None
    try:
        result = train(
            model,
            context.data,
            params,
            config.train,
            augment=config.data.augment,
            class_weights=weights,
            device=context.device,
            seed=seed,
            on_epoch=on_epoch,
        )
    except NonFiniteLossError as exc:
        trial.set_user_attr("stopped", f"non-finite loss: {exc}")
        raise optuna.TrialPruned(f"non-finite loss: {exc}") from None
    trial.set_user_attr("best_epoch", result.best_epoch)
    if result.stopped_early:
        trial.set_user_attr("stopped", f"pruned after epoch {history[-1].epoch}")
        raise optuna.TrialPruned(f"pruned after epoch {history[-1].epoch}")
    _keep_checkpoint(trial, result, context)
    return result.best_accuracy


def _record_curves(trial: optuna.Trial, history: list[EpochMetrics]) -> None:
    trial.set_user_attr("val_accuracy", [m.val_accuracy for m in history])
    trial.set_user_attr("train_loss", [m.train_loss for m in history])
    trial.set_user_attr("epoch_seconds", [round(m.seconds, 3) for m in history])
    trial.set_user_attr("frozen_depth", [m.frozen_depth for m in history])


def _keep_checkpoint(trial: optuna.Trial, result: TrainResult, context: SearchContext) -> None:
    """Upload the best-epoch weights if this trial ranks in the top k, then evict the rest.

    Only complete trials keep checkpoints; a trial that would not enter the top k
    uploads nothing, so the store never holds more than k checkpoints for long.
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
    trial.set_user_attr(study_mod.CHECKPOINT_ATTR, artifact_id)
    # This trial is not COMPLETE yet, so it holds one of the k places without being ranked.
    study_mod.evict_checkpoints(study, context.store, keep - 1)
