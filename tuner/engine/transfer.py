"""Images -> uint8 batches on the compute device: indexed where they live, or streamed.

Both sources yield the same batches for the same indices, so a run's results do not depend
on which one it uses (:mod:`tuner.engine.placement` picks). :class:`ResidentImages` holds
the split on the device (on the CPU: the memory-mapped array itself, read in place).
:class:`StreamedImages` leaves it in the host's memory map and keeps one batch in flight:
a background thread gathers the next batch (into pinned memory for CUDA) while the current
one computes, and on CUDA the copy runs on a side stream the compute stream waits for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from torch import Tensor

Span = tuple[int, int]
"""A batch as positions [start, stop) of an order (or of the split itself)."""


class ResidentImages:
    """A split that lives on the compute device for the whole run."""

    def __init__(self, images: Tensor) -> None:
        self.images = images
        self.device = images.device

    def __len__(self) -> int:
        return len(self.images)

    def gather(self, order: Tensor, spans: Sequence[Span]) -> Iterator[Tensor]:
        """The images at ``order[start:stop]`` for each span (``order``: CPU indices)."""
        order = order.to(self.device)
        for start, stop in spans:
            yield self.images[order[start:stop]]

    def chunks(self, size: int) -> Iterator[Tensor]:
        """The split in order, ``size`` images at a time."""
        for start in range(0, len(self.images), size):
            yield self.images[start : start + size]


class StreamedImages:
    """A split left in host memory, copied to the device one batch ahead of the compute."""

    def __init__(self, images: Tensor, device: torch.device) -> None:
        self.images = images
        self.device = device
        self._pin = device.type == "cuda"
        self._stream = torch.cuda.Stream(device) if self._pin else None

    def __len__(self) -> int:
        return len(self.images)

    def gather(self, order: Tensor, spans: Sequence[Span]) -> Iterator[Tensor]:
        return self._streamed([lambda s=span: self._take(order[s[0] : s[1]]) for span in spans])

    def chunks(self, size: int) -> Iterator[Tensor]:
        starts = range(0, len(self.images), size)
        return self._streamed([lambda s=start: self._slice(s, s + size) for start in starts])

    def _take(self, index: Tensor) -> Tensor:
        out = torch.empty((len(index), *self.images.shape[1:]), dtype=self.images.dtype,
                          pin_memory=self._pin)  # fmt: skip
        return torch.index_select(self.images, 0, index, out=out)

    def _slice(self, start: int, stop: int) -> Tensor:
        part = self.images[start:stop]
        return part.pin_memory() if self._pin else part

    def _streamed(self, gathers: list[Callable[[], Tensor]]) -> Iterator[Tensor]:
        """Run ``gathers`` one ahead on a thread; yield each result on the device in order."""
        with ThreadPoolExecutor(1, thread_name_prefix="tuner-gather") as pool:
            pending: Future[Tensor] | None = pool.submit(gathers[0]) if gathers else None
            for index in range(len(gathers)):
                host = pending.result()
                more = index + 1 < len(gathers)
                pending = pool.submit(gathers[index + 1]) if more else None
                yield self._to_device(host)

    def _to_device(self, host: Tensor) -> Tensor:
        if self._stream is None:
            return host
        with torch.cuda.stream(self._stream):
            on_device = host.to(self.device, non_blocking=True)
        compute = torch.cuda.current_stream(self.device)
        compute.wait_stream(self._stream)
        on_device.record_stream(compute)  # its memory is compute's to free, not the side stream's
        return on_device


ImageSource = ResidentImages | StreamedImages


class DeviceCopies:
    """One worker's device copies of its splits, uploaded by its first trial and reused by
    every later one: resident data that each trial uploaded again would cost a full copy of
    the dataset per trial, which is what keeping it resident is meant to avoid."""

    def __init__(self) -> None:
        self._copies: list[tuple[Tensor, torch.device, Tensor]] = []  # host, device, copy

    def on(self, images: Tensor, device: torch.device) -> Tensor:
        """``images`` on ``device``: the copy made before for this very tensor, or a new one."""
        for host, where, copy in self._copies:
            if host is images and where == device:
                return copy
        copy = images.to(device)
        self._copies.append((images, device, copy))  # holding ``host`` keeps its id unique
        return copy


def image_source(
    images: Tensor, device: torch.device, *, resident: bool, copies: DeviceCopies | None = None
) -> ImageSource:
    """``images`` as a source on ``device``: moved there when ``resident`` (once per worker
    with ``copies``), else streamed.

    Moving images that already live on ``device`` (a memory map, for a CPU run) is a no-op:
    they are read in place.
    """
    if not resident:
        return StreamedImages(images, device)
    return ResidentImages(images.to(device) if copies is None else copies.on(images, device))
