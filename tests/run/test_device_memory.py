"""A worker's GPU failures: out-of-memory trials fail alone, a broken device ends the worker.

Neither failure can happen on this machine's CPU, so the engine's ``train`` is wrapped to
raise what CUDA raises (``torch.OutOfMemoryError``, ``torch.AcceleratorError``) for some
recipes; everything else is real: Optuna, the SQLite study, the worker loop, torch training.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from optuna.storages import RetryFailedTrialCallback
from optuna.trial import TrialState

from tuner.errors import DeviceFailedError
from tuner.recipe import TrialParams
from tuner.run import device_memory, objective
from tuner.run.device_memory import OutOfMemoryLog, is_device_failure
from tuner.run.workers import run_worker

PARAMS = TrialParams(0, None, "all", 1e-3, 1e-4, "adam", 64, 1e-5)
FIXED = ["space.freeze_depth=0", "space.unfreeze_epoch=never", "space.ema=0.0",
         "space.mixup=0.0", "space.cutmix=0.0", "space.batch_size={choices: [16, 32, 64, 128]}",
         "search.pruner=none"]  # fmt: skip


def test_a_batch_size_that_ran_out_of_memory_refuses_it_and_larger_ones_of_that_footprint() -> None:
    log = OutOfMemoryLog()
    log.record(PARAMS, trial=4)

    refusal = log.refusal(dataclasses.replace(PARAMS, batch_size=128))
    assert refusal is not None and "trial #4" in refusal and "batch size 64" in refusal
    assert log.refusal(PARAMS) is not None
    assert log.refusal(dataclasses.replace(PARAMS, batch_size=32)) is None
    assert log.refusal(dataclasses.replace(PARAMS, batch_size=128, freeze_depth=3)) is None
    assert log.refusal(dataclasses.replace(PARAMS, batch_size=128, arch="resnet50")) is None
    log.record(dataclasses.replace(PARAMS, batch_size=32), trial=5)
    assert "batch size 32" in log.refusal(dataclasses.replace(PARAMS, batch_size=48))


def test_only_cuda_errors_that_are_not_out_of_memory_break_the_device() -> None:
    assert is_device_failure(torch.AcceleratorError("CUDA error: an illegal memory access"))
    assert is_device_failure(RuntimeError("CUDA error: device-side assert triggered"))
    assert not is_device_failure(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate"))
    assert not is_device_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_device_failure(ValueError("CUDA error"))


def _train_failing(monkeypatch: pytest.MonkeyPatch, error: Exception, from_batch: int) -> None:
    """``train`` raises ``error`` for batch sizes from ``from_batch`` on, as a GPU would."""
    real = objective.train

    def train(model, data, params, *args, **kwargs):
        if params.batch_size >= from_batch:
            raise error
        return real(model, data, params, *args, **kwargs)

    monkeypatch.setattr(objective, "train", train)


def test_an_out_of_memory_trial_fails_with_its_numbers_and_the_worker_goes_on(
    make_context, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has 1.10 GiB free."
    _train_failing(monkeypatch, torch.OutOfMemoryError(message), from_batch=64)
    pinned, context = make_context(*FIXED, "search.trials=3")
    for batch in (64, 128, 32, 16):
        pinned.study.enqueue_trial({"batch_size": batch})

    outcome = run_worker(pinned.study, context)

    states = [t.state for t in pinned.study.trials]
    assert states == [TrialState.FAIL, TrialState.PRUNED, TrialState.COMPLETE, TrialState.COMPLETE]
    oom, refused = pinned.study.trials[0].user_attrs["fail_reason"], pinned.study.trials[1]
    assert "out of memory" in oom and "batch size 64" in oom and "Tried to allocate 2.00 GiB" in oom
    reason = refused.user_attrs["stopped"]  # pruned: TPE learns from it, no failure streak
    assert "not run: trial #0 ran out of GPU memory" in reason and "(this one: 128)" in reason
    assert outcome.finished == 3 and outcome.stopped_reason is None


def test_a_broken_device_fails_the_trial_for_a_retry_and_ends_the_worker(
    make_context, monkeypatch: pytest.MonkeyPatch
) -> None:
    error = torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
    _train_failing(monkeypatch, error, from_batch=64)
    pinned, context = make_context(*FIXED, "search.trials=2")
    pinned.study.enqueue_trial({"batch_size": 16})
    pinned.study.enqueue_trial({"batch_size": 64})

    with pytest.raises(DeviceFailedError, match="illegal memory access"):
        run_worker(pinned.study, context)

    first, broken, retry = pinned.study.trials
    assert (first.state, broken.state, retry.state) == (
        TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING,
    )  # fmt: skip
    assert broken.user_attrs["fail_reason"].startswith("the GPU failed (CUDA error")
    assert RetryFailedTrialCallback.retried_trial_number(retry) == broken.number


def test_on_the_cpu_no_peak_is_recorded_and_handing_back_is_harmless() -> None:
    cpu = torch.device("cpu")
    device_memory.start_trial(cpu)
    assert device_memory.peak_reserved(cpu) is None
    device_memory.hand_back(cpu)
