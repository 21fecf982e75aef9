"""Whether a worker keeps the data resident on its device or streams it (``data_on_device``).

``always`` keeps the training and validation images on the device for every trial (batches
are then gathered there: the fastest path); ``never`` streams them from the host's memory
map one batch ahead (:class:`tuner.engine.transfer.StreamedImages`); ``auto`` keeps them
resident when they fit in ``train.data_on_device_share`` of the device's free memory,
divided among the workers that share the device, and streams them otherwise. On the CPU
"resident" is the memory map itself, read in place through the page cache that all of a
host's workers share, so the host's available memory is not divided; streaming there only
gathers the next batch on a thread while the current one computes. The frozen-feature cache
(``train.feature_cache_mb``) is divided among a GPU's workers in the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from tuner.config import DATA_ON_DEVICE, TrainConfig
from tuner.data import PreparedData
from tuner.errors import TunerError

WORKERS_ON_DEVICE_ENV = "TUNER_WORKERS_ON_DEVICE"
"""Set by the launcher for its GPU workers: how many share this worker's GPU (--per-gpu)."""


@dataclass(frozen=True)
class Placement:
    """The choice made for one worker, with the numbers behind it."""

    resident: bool
    device: str
    data_bytes: int
    allowed_bytes: int | None  # None: not measured (``never``)

    @property
    def mode(self) -> str:
        return "resident" if self.resident else "streamed"

    def describe(self) -> str:
        size = _gb(self.data_bytes)
        if self.allowed_bytes is None:
            return f"streamed from the host's memory map to {self.device} ({size})"
        room = f"{_gb(self.allowed_bytes)} allowed"
        if self.resident:
            where = "in place (memory-mapped)" if self.device == "cpu" else f"on {self.device}"
            return f"resident {where} ({size}; {room})"
        return f"streamed from the host's memory map to {self.device} ({size} > {room})"


def choose_placement(
    data: PreparedData, device: torch.device, cfg: TrainConfig, sharing: int | None = None
) -> Placement:
    """Resident or streamed, per ``cfg.data_on_device``; ``sharing`` workers use the device.

    Raises:
        TunerError: for ``always`` when the data does not fit, naming the key and the sizes.
    """
    if cfg.data_on_device not in DATA_ON_DEVICE:
        raise TunerError(
            f"train.data_on_device: unknown {cfg.data_on_device!r}; use one of "
            f"{', '.join(DATA_ON_DEVICE)}"
        )
    needed = _nbytes(data)
    if cfg.data_on_device == "never":
        return Placement(False, str(device), needed, None)
    sharing = workers_on_device() if sharing is None else sharing
    free = free_bytes(device)
    workers = 1 if device.type == "cpu" else sharing  # the page cache is shared, GPU copies not
    allowed = int(free * cfg.data_on_device_share / workers)
    fits = needed <= allowed
    if cfg.data_on_device == "always" and not fits:
        of_whom = f", split among {workers} workers" if workers > 1 else ""
        raise TunerError(
            f"train.data_on_device: always, but the data ({_gb(needed)} of images) does not fit "
            f"in train.data_on_device_share={cfg.data_on_device_share} of the {_gb(free)} free "
            f"on {device}{of_whom} ({_gb(allowed)}); set it to auto or never to stream batches"
        )
    return Placement(fits, str(device), needed, allowed)


def feature_cache_bytes(cfg: TrainConfig, device: torch.device, sharing: int | None = None) -> int:
    """One worker's share of ``train.feature_cache_mb``: the budget of a device.

    On a GPU shared by ``sharing`` workers (--per-gpu; by default from the launcher), each
    keeps its own cache in that GPU's memory, so each gets 1/K, as with resident data; on the
    CPU each worker's cache is in its own process's memory and gets it all. No CUDA call.
    """
    sharing = workers_on_device() if sharing is None else sharing
    workers = 1 if device.type == "cpu" else sharing
    return (cfg.feature_cache_mb << 20) // workers


def workers_on_device() -> int:
    """How many workers share this process's device, from the launcher (1 when unset)."""
    value = os.environ.get(WORKERS_ON_DEVICE_ENV, "1")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def free_bytes(device: torch.device) -> int:
    """Free memory of a CUDA device, or the host's available memory (MemAvailable) for the CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _nbytes(data: PreparedData) -> int:
    images = (data.train_images, data.val_images)
    return sum(t.numel() * t.element_size() for t in images)


def _gb(nbytes: int) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"
