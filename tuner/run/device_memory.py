"""A worker's GPU between trials: memory handed back, out-of-memory trials, a broken device.

Several workers share a GPU (``--per-gpu K``), so each hands its cached blocks back after
every trial instead of keeping its peak reserved, and records that peak on the trial. A
recipe that runs out of memory fails alone with the numbers that explain it, and the worker
goes on; a later trial of the same memory footprint at that batch size or more is pruned at
once instead of running into the same wall (pruned, so that the sampler learns from it).
Any other CUDA error leaves the process's context unusable (every later kernel fails too):
the worker stops with :class:`DeviceFailedError`, so a fresh process retries the trial.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field

import torch

from tuner.errors import DeviceFailedError
from tuner.recipe import TrialParams

PEAK_ATTR = "cuda_peak_reserved_bytes"
"""Trial attribute: the most GPU memory the worker's allocator held during the trial."""


@dataclass(frozen=True)
class Footprint:
    """What sets a trial's memory beyond its batch size: the network, how much of it trains
    and keeps activations for backward, and the extra copies (weight average, mixed batches)."""

    arch: str
    freeze_depth: int
    unfreezes: bool
    ema: bool
    mixes: bool

    @classmethod
    def of(cls, params: TrialParams) -> Footprint:
        unfreezes = params.unfreeze_epoch is not None
        return cls(params.arch, params.freeze_depth, unfreezes, params.ema > 0, params.mixes)


@dataclass
class OutOfMemoryLog:
    """The batch sizes that ran out of memory on this worker, per :class:`Footprint`."""

    smallest: dict[Footprint, tuple[int, int]] = field(default_factory=dict)  # batch, trial

    def refusal(self, params: TrialParams) -> str | None:
        """Why this trial would run out of memory as an earlier one did; None if it may fit."""
        known = self.smallest.get(Footprint.of(params))
        if known is None or params.batch_size < known[0]:
            return None
        batch, trial = known
        return (
            f"not run: trial #{trial} ran out of GPU memory on this worker with the same "
            f"{params.arch}, freeze depth and extras at batch size {batch} "
            f"(this one: {params.batch_size})"
        )

    def record(self, params: TrialParams, trial: int) -> None:
        footprint = Footprint.of(params)
        known = self.smallest.get(footprint)
        if known is None or params.batch_size < known[0]:
            self.smallest[footprint] = (params.batch_size, trial)


def out_of_memory_reason(params: TrialParams, exc: BaseException, device: torch.device) -> str:
    """One line: the recipe, the batch size, what the allocator asked for and what was free."""
    asked = str(exc).strip().splitlines()[0] if str(exc).strip() else "no details"
    free = ""
    if device.type == "cuda":
        available, total = torch.cuda.mem_get_info(device)
        free = f"; after freeing, {available / 2**30:.1f} of {total / 2**30:.1f} GiB free"
    return (
        f"out of memory: {params.arch}, freeze depth {params.freeze_depth}, batch size "
        f"{params.batch_size} on {device} ({asked[:300]}){free}; smaller batch sizes go on"
    )


def is_device_failure(exc: BaseException) -> bool:
    """A CUDA error other than out-of-memory: the process's context is broken for good."""
    if isinstance(exc, torch.OutOfMemoryError):
        return False
    accelerator = getattr(torch, "AcceleratorError", ())
    return isinstance(exc, accelerator) or (
        isinstance(exc, RuntimeError) and "CUDA error" in str(exc)
    )


def device_failed(exc: BaseException) -> DeviceFailedError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DeviceFailedError(
        f"the GPU failed ({first[:300]}); this worker exits so that a fresh process retries "
        "its trial (a launcher or Slurm starts one; by hand: run `tuner worker` again)"
    )


def start_trial(device: torch.device) -> None:
    """Count the trial's peak from zero."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_reserved(device: torch.device) -> int | None:
    return torch.cuda.max_memory_reserved(device) if device.type == "cuda" else None


def hand_back(device: torch.device) -> None:
    """Free what the ended trial left (its tensors, once unreferenced) for the neighbours."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
