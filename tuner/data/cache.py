"""The prepared dataset on disk: decoded once per host, memory-mapped by every worker.

An entry is a folder ``<cache_dir>/<key>/`` of ``.npy`` arrays and a ``meta.json``. The key
hashes what the prepared tensors depend on: the data config keys that shape them and every
source file's path, size and modification time, so a changed, added or removed file (or
another image size, split or class list) makes a new key and a rebuild. Arrays are opened with
``np.load(mmap_mode="c")``: the page cache holds one copy, shared by all processes on the host.

An entry is built in a private temporary folder and renamed into place, which is atomic: two
workers building at once each write their own and one rename wins; nobody ever reads a half
written entry, and an interrupted build leaves nothing behind. The cache folder belongs on a
local disk of each host.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from tuner.config import DataConfig
from tuner.data.sources import source_files, source_versions
from tuner.errors import TunerError
from tuner.processes import process_alive

FORMAT = 3  # bump when the layout or the preparation changes, so old entries are not read
ARRAYS = ("train_images", "train_labels", "val_images", "val_labels")
"""The arrays of an entry, each ``<name>.npy``, in the order the fingerprint hashes them."""
TEST_ARRAYS = ("test_images", "test_labels")
"""The held-out test split's arrays (empty without one), mapped only when asked for."""
META = "meta.json"
_BUILDING = ".building-"
_NOT_SHAPING = (
    "download",
    "augment",
    "class_weights",
    "cache_dir",
    "prepare_workers",
)  # don't change the tensors


def cache_path(cfg: DataConfig) -> Path | None:
    """``data.cache_dir`` as a folder (relative to the working directory), None for ``none``."""
    return None if cfg.cache_dir == "none" else Path(cfg.cache_dir).expanduser()


def entry_path(cfg: DataConfig) -> Path | None:
    """The folder this config's prepared data is (or will be) kept in; None without a cache."""
    folder = cache_path(cfg)
    return None if folder is None else folder / source_key(cfg)


def source_key(cfg: DataConfig) -> str:
    """SHA-256 of the shaping config and of the source files' paths, sizes and mtimes."""
    shaping = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_SHAPING}
    shaping.update(source_versions(cfg))  # digits: scikit-learn's version stands for its file
    digest = hashlib.sha256(json.dumps([FORMAT, shaping], sort_keys=True).encode())
    for path in source_files(cfg):
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def load(
    cache_dir: Path, key: str, with_test: bool = False
) -> tuple[dict[str, torch.Tensor], dict] | None:
    """(arrays memory-mapped as tensors, meta) of an entry, or None when absent or unreadable."""
    return read(cache_dir / key, with_test)


def read(folder: Path, with_test: bool = False) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The arrays of an entry folder, memory-mapped copy-on-write (a write never reaches the
    file), and its meta; None when it is incomplete or unreadable. The test arrays are
    mapped only ``with_test``."""
    names = ARRAYS + TEST_ARRAYS if with_test else ARRAYS
    try:
        meta = json.loads((folder / META).read_text())
        arrays = {
            name: torch.from_numpy(np.load(folder / f"{name}.npy", mmap_mode="c")) for name in names
        }
    except (OSError, ValueError):
        return None
    return arrays, meta


@contextlib.contextmanager
def build(cache_dir: Path, key: str) -> Iterator[Path]:
    """A private folder to write an entry into; renamed into place if the block succeeds.

    The block writes the arrays and then ``meta.json`` (last: it marks the entry complete).
    On any exception, Ctrl-C included, the folder is removed; one left by a process that
    was killed outright is removed by the next build on this host. If another process
    renamed its copy into place first, theirs is kept. An unreadable entry under the same
    key (a disk that filled up mid-write, a hand edit) is replaced.
    """
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        _sweep_abandoned(cache_dir)
        building = (
            cache_dir / f"{_BUILDING}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        )
        building.mkdir()
    except OSError as exc:
        raise TunerError(
            f"data.cache_dir: cannot write the data cache in {cache_dir} ({exc.strerror}); "
            "set data.cache_dir to a writable local folder, or none to go without it"
        ) from exc
    try:
        yield building
        final = cache_dir / key
        if final.exists() and load(cache_dir, key) is None:
            shutil.rmtree(final, ignore_errors=True)
        with contextlib.suppress(OSError):  # another process renamed its copy into place first
            building.rename(final)
    except OSError as exc:
        reason = exc.strerror or exc
        raise TunerError(
            f"data.cache_dir: writing the prepared data in {cache_dir} failed ({reason}); free "
            "some space or set data.cache_dir to another local folder"
        ) from exc
    finally:
        shutil.rmtree(building, ignore_errors=True)


def _sweep_abandoned(cache_dir: Path) -> None:
    """Remove build folders of this host's processes that no longer run (killed mid-build)."""
    host = socket.gethostname()
    for folder in cache_dir.glob(f"{_BUILDING}{host}-*"):
        pid = folder.name[len(f"{_BUILDING}{host}-") :].split("-")[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
