"""Image files -> rows of one preallocated, memory-mapped uint8 array, on every core.

The array is a ``.npy`` file created at its final shape before anything is decoded; each
decoding process opens it shared and writes its images straight into their rows, so no
process ever holds more than the image it is decoding, whatever the dataset's size. Files
are handed out in fixed chunks and every row depends only on its file, so the result is the
same byte for byte with 1 or N processes.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np

from tuner.data.images import load_fitted
from tuner.errors import TunerError

_PR_SET_PDEATHSIG = 1  # prctl(2) option: the signal a process gets when its parent dies
CHUNK = 64
"""Files one process decodes per task: small enough for a smooth progress bar."""
_PER_PROCESS = 4 * CHUNK  # below this many files per process, starting processes costs more

Decoded = Callable[[int], None]
"""Called with how many more files were decoded (or found unreadable)."""


def host_cores() -> int:
    """The CPU cores this process may run on (its affinity, as under Slurm or taskset)."""
    return len(os.sched_getaffinity(0))


def decode_into(
    paths: Sequence[Path], size: int, out: Path, processes: int, decoded: Decoded | None = None
) -> list[int]:
    """Decode ``paths`` into a new uint8 [N, 3, size, size] ``.npy`` at ``out``.

    Returns the (sorted) indices of the files that could not be read; their rows stay zero.
    ``processes`` is an upper bound: a small dataset decodes in this process.
    """
    rows = np.lib.format.open_memmap(
        out, mode="w+", dtype=np.uint8, shape=(len(paths), 3, size, size)
    )
    del rows  # the header and the file's full length are written; the decoders fill the rows
    tasks = [
        (out, size, start, paths[start : start + CHUNK]) for start in range(0, len(paths), CHUNK)
    ]
    processes = min(processes, len(paths) // _PER_PROCESS)
    if processes <= 1:
        bad = []
        for task in tasks:
            bad += _decode_chunk(*task)
            if decoded is not None:
                decoded(len(task[3]))
        return bad
    return sorted(_decode_in_pool(tasks, processes, decoded))


def _decode_in_pool(tasks: list, processes: int, decoded: Decoded | None) -> list[int]:
    """Run the chunks on ``processes`` forked processes, as torch's DataLoader workers are.

    Forking costs milliseconds where a fresh interpreter would import torch again, and it
    needs no importable ``__main__`` (a notebook, ``python -``); the decoders only run PIL
    and CPU torch on one thread.

    On any exception (Ctrl-C included) the chunks not yet started are cancelled at once, so
    an interrupted prepare stops instead of decoding the rest first.
    """
    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(
        processes, mp_context=context, initializer=_start_decoder, initargs=(os.getpid(),)
    )
    bad: list[int] = []
    try:
        sizes = {pool.submit(_decode_chunk, *task): len(task[3]) for task in tasks}
        pending: set[Future] = set(sizes)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                bad += future.result()
                if decoded is not None:
                    decoded(sizes[future])
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return bad


def _start_decoder(parent: int) -> None:
    """A decoding process: one thread (the pool is the parallelism); Ctrl-C is the parent's.

    It ends with its parent: a prepare killed outright (SIGKILL, the OOM killer) would
    otherwise leave its decoders waiting forever on the pool's queue, each holding its
    memory. Linux says so with PR_SET_PDEATHSIG; elsewhere the decoders end with the queue.
    """
    import torch

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above took effect
        os._exit(0)
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


_buffers: dict[int, np.ndarray] = {}


def _chunk_buffer(size: int) -> np.ndarray:
    """This process's reusable buffer for one chunk: fresh pages cost more than decoding
    on some machines (seen on a VM: 250 MB/s), so a chunk's memory is touched only once."""
    if size not in _buffers:
        _buffers.clear()
        _buffers[size] = np.empty((CHUNK, 3, size, size), dtype=np.uint8)
    return _buffers[size]


def _decode_chunk(out: Path, size: int, start: int, paths: Sequence[Path]) -> list[int]:
    """Write ``paths`` into rows ``start``... of ``out``; the indices of unreadable files.

    The chunk is decoded into a buffer and written with one ``pwrite`` at its rows' offset,
    which costs the kernel far less than faulting in the fresh file's pages one by one.
    """
    header = np.load(out, mmap_mode="r").offset  # where row 0 starts in the .npy file
    rows = _chunk_buffer(size)[: len(paths)]
    bad = []
    for offset, path in enumerate(paths):
        try:
            rows[offset] = load_fitted(path, size).numpy()
        except TunerError:
            rows[offset] = 0
            bad.append(start + offset)
    descriptor = os.open(out, os.O_WRONLY)
    try:
        os.pwrite(descriptor, rows.data, header + start * rows[0].nbytes)
    finally:
        os.close(descriptor)
    return bad
