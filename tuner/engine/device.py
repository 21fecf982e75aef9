"""Where a run computes and in which precision: the device named in ``train.device``, AMP, and
the backend settings of a process that trains there."""

from __future__ import annotations

import torch

from tuner.config import AMP_MODES
from tuner.errors import TunerError


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


def configure_backends(device: torch.device) -> None:
    """Set the process-wide backend flags for training on ``device``; no CUDA call is made.

    cuDNN benchmarks the convolution algorithms for each new input shape once and keeps the
    fastest: a worker runs trial after trial of the same few shapes, so it pays that once.
    tuner has no deterministic setting, so this is on for every CUDA worker: a seeded run on
    a GPU is reproducible only up to the algorithms cuDNN chooses (they may differ between
    runs, GPUs and versions, as may bfloat16 autocast's rounding); on the CPU it stays off.
    """
    torch.backends.cudnn.benchmark = device.type == "cuda"


def amp_enabled(device: torch.device, amp: str) -> bool:
    """Whether training runs under bfloat16 autocast: on CUDA unless ``train.amp`` is off."""
    if amp not in AMP_MODES:
        raise TunerError(f"train.amp: unknown value {amp!r}; use one of {', '.join(AMP_MODES)}")
    return device.type == "cuda" and amp != "off"


def autocast_for(device: torch.device, amp: str) -> torch.autocast:
    """bfloat16 autocast where :func:`amp_enabled` (bf16 needs no loss scaling); a no-op else."""
    enabled = amp_enabled(device, amp)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
