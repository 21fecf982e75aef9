"""A data source -> one prepared, split, fixed-size uint8 dataset.

Every source (:mod:`tuner.data.sources`: scikit-learn's digits, four torchvision datasets, an
image-folder tree) is filtered (``classes``), merged (``relabel``), capped (``per_class``) and
split (:mod:`tuner.data.split`), decoded once (on every core, :mod:`tuner.data.decode`),
resized to ``image_size`` (:mod:`tuner.data.images`), and written as memory-mapped uint8
arrays, so training never touches files or PIL again and no process holds the dataset in its
own memory. Training keeps it on the device or streams batches from the map
(:mod:`tuner.engine.placement`); augmentation happens on the device
(:mod:`tuner.data.augment`). The same ``DataConfig`` always yields the same arrays, checked
by :attr:`PreparedData.fingerprint`.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tuner.config import DataConfig
from tuner.data import cache as datacache
from tuner.data.decode import decode_into, host_cores
from tuner.data.images import fit_square
from tuner.data.sources import Split, load_source
from tuner.data.split import (
    TEST_NONE,
    check_classes,
    relabel_mapping,
    split_sides,
    subset_mapping,
    test_split_of,
)
from tuner.errors import TunerError

ProgressCallback = Callable[[int, int], None]
"""Called as (images done, images in all) while the prepared arrays are written."""

_WRITE_BYTES = 16 << 20  # bytes gathered, resized or hashed per step: bounds a build's memory
_MAX_LISTED = 20  # unreadable files named in one error message


@dataclass(frozen=True, eq=False)
class PreparedData:
    """The decoded, split and resized dataset every trial trains and validates on.

    Images are uint8 [N, 3, S, S] on the CPU (S = ``DataConfig.image_size``); labels are
    int64 indices into ``class_names``. ``fingerprint`` hashes the content, the test split
    included, so a worker can verify it rebuilt exactly the data the study was created with.
    The test images themselves are left out unless asked for: nothing that selects a model
    (the search, ``tuner confirm``) ever holds them, only the export that evaluates one.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    class_names: tuple[str, ...]
    fingerprint: str
    skipped_files: tuple[str, ...] = ()
    test_split: str = TEST_NONE  # where the held-out test images come from, in words
    test_count: int = 0
    test_images: torch.Tensor | None = None  # only when asked for (prepare_data(with_test=True))
    test_labels: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_weights(self) -> torch.Tensor:
        """float32 [C] inverse class frequencies of the training labels, N / (C * n_c).

        A balanced dataset gets all ones; a loss weighted with these counts each class
        as much as any other (``data.class_weights: auto``).
        """
        counts = torch.bincount(self.train_labels, minlength=self.num_classes).float()
        return len(self.train_labels) / (self.num_classes * counts)


def prepare_data(
    cfg: DataConfig,
    cache_dir: Path | None = None,
    progress: ProgressCallback | None = None,
    with_test: bool = False,
) -> PreparedData:
    """The dataset every trial uses, from the host's disk cache when it has it.

    The arrays are written to disk as they are built and memory-mapped, never held whole
    in memory. With ``cache_dir`` they stay in the :mod:`tuner.data.cache` entry for this
    config and these source files, so every worker process on the host shares one copy and
    nothing is decoded twice; without, they are built in a temporary folder that is gone
    once mapped. ``progress`` follows the decoding and writing when there is a build.
    ``with_test`` maps the held-out test images too (``tuner export-best`` evaluates on them).
    """
    if cache_dir is None:
        with tempfile.TemporaryDirectory(prefix="tuner-data-") as scratch:
            _build(cfg, Path(scratch), progress)
            # the mappings outlive the files
            return _opened(datacache.read(Path(scratch), with_test))
    key = datacache.source_key(cfg)
    found = datacache.load(cache_dir, key, with_test)
    if found is None:
        with datacache.build(cache_dir, key) as folder:
            _build(cfg, folder, progress)
        found = datacache.load(cache_dir, key, with_test)
    return _opened(found)


def with_val_in_training(data: PreparedData, folder: Path) -> PreparedData:
    """The training and validation images as one training split, for a refit on both.

    The images are copied a chunk at a time into a new array in ``folder`` and memory-mapped
    (the mapping outlives the file), so even data bigger than memory can be refit. The
    validation split is left empty, the test split is not carried, and the fingerprint is
    the data's own marked "+val", so nothing cached for the search's split is reused.
    """
    sides = (data.train_images, data.val_images)
    count = sum(len(side) for side in sides)
    path = folder / "train_val_images.npy"
    rows = np.lib.format.open_memmap(path, "w+", np.uint8, (count, *data.train_images.shape[1:]))
    per_chunk = max(1, _WRITE_BYTES // max(1, data.train_images[0].numel()))
    done = 0
    for side in sides:
        for start in range(0, len(side), per_chunk):
            chunk = side[start : start + per_chunk].numpy()
            rows[done : done + len(chunk)] = chunk
            done += len(chunk)
    del rows
    return PreparedData(
        train_images=torch.from_numpy(np.load(path, mmap_mode="c")),
        train_labels=torch.cat([data.train_labels, data.val_labels]),
        val_images=data.val_images[:0],
        val_labels=data.val_labels[:0],
        class_names=data.class_names,
        fingerprint=f"{data.fingerprint}+val",
        skipped_files=data.skipped_files,
    )


def _opened(found: tuple[dict[str, torch.Tensor], dict] | None) -> PreparedData:
    if found is None:  # only when the disk lost what was just written
        raise TunerError("data.cache_dir: the prepared data just written cannot be read back")
    arrays, meta = found
    return PreparedData(
        **arrays,
        class_names=tuple(meta["class_names"]),
        fingerprint=meta["fingerprint"],
        skipped_files=tuple(meta["skipped_files"]),
        test_split=meta["test_split"],
        test_count=meta["test_count"],
    )


def _build(cfg: DataConfig, folder: Path, progress: ProgressCallback | None) -> None:
    """Read ``cfg.source`` and write the dataset every trial uses into ``folder``.

    Steps, in order: load (a folder source only lists its files); keep ``classes`` (in the
    given order); merge with ``relabel``; cap each final class at ``per_class`` images (a
    seeded sample of the training pool; a validation or test side the source gives is not
    capped); hold out, per class and seeded, what the source does not give: ``val_fraction``
    for validation, ``test_fraction`` for test (``data.test_source``); write each array
    fitted to ``image_size`` (:class:`_ArrayWriter`), leaving out the unreadable files when
    ``skip_bad_images`` allows it; ``meta.json`` last.

    Raises:
        TunerError: for every unusable input (missing or unreadable files, unknown class
            names, a class left without training, validation or test images, ...), naming the
            key or path.
    """
    loaded = load_source(cfg)
    if cfg.classes is not None:
        loaded = loaded.remap(*subset_mapping(loaded.class_names, cfg.classes))
    if cfg.relabel is not None:
        loaded = loaded.remap(*relabel_mapping(loaded.class_names, cfg.relabel))
    names, test_split = loaded.class_names, test_split_of(cfg, loaded)
    sides = split_sides(cfg, loaded, test_split)
    labels = {side: split.labels for side, split in sides.items()}
    check_classes(names, labels, cfg, test_split)

    processes = cfg.prepare_workers or host_cores()
    total = sum(len(side) for side in labels.values())
    writer = _ArrayWriter(folder, cfg.image_size, processes, progress, total)
    bad = {side: writer.images(f"{side}_images", split) for side, split in sides.items()}
    skipped = [str(split.pool[split.rows[i]]) for side, split in sides.items() for i in bad[side]]
    if skipped and not cfg.skip_bad_images:
        raise _unreadable(skipped)
    if skipped:  # left out after the split: the other files keep their side
        for side in sides:
            labels[side] = np.delete(labels[side], bad[side])
            writer.drop_rows(f"{side}_images", bad[side])
        check_classes(names, labels, cfg, test_split)
    for side, side_labels in labels.items():
        np.save(folder / f"{side}_labels.npy", side_labels)
    meta = {
        "class_names": names,
        "fingerprint": _fingerprint(folder, names),
        "skipped_files": skipped,
        "test_split": test_split,
        "test_count": len(labels["test"]),
    }
    (folder / datacache.META).write_text(json.dumps(meta))


class _ArrayWriter:
    """Writes a split's images as a uint8 [N, 3, S, S] ``.npy``, never holding it whole.

    Image files are decoded straight into their rows on ``processes`` processes
    (:mod:`tuner.data.decode`); tensors read in bulk are gathered and fitted ``_WRITE_BYTES``
    at a time.
    """

    def __init__(
        self, folder: Path, size: int, processes: int, progress: ProgressCallback | None, total: int
    ) -> None:
        self._folder, self._size, self._processes = folder, size, processes
        self._progress = progress
        self._done, self._total = 0, total

    def images(self, name: str, split: Split) -> list[int]:
        """Write ``split``'s images as ``name``.npy; the rows whose file was unreadable."""
        out = self._folder / f"{name}.npy"
        if isinstance(split.pool, tuple):
            return decode_into(split.files(), self._size, out, self._processes, self._advance)
        shape = (len(split.labels), 3, self._size, self._size)
        rows = np.lib.format.open_memmap(out, "w+", np.uint8, shape)
        per_chunk = max(1, _WRITE_BYTES // (3 * self._size * self._size))
        for start in range(0, len(split.labels), per_chunk):
            stop = min(start + per_chunk, len(split.labels))
            rows[start:stop] = fit_square(split.images(start, stop), self._size).numpy()
            self._advance(stop - start)
        return []

    def drop_rows(self, name: str, bad: list[int]) -> None:
        """Rewrite ``name``.npy without the rows ``bad``, a chunk at a time."""
        source = np.load(self._folder / f"{name}.npy", mmap_mode="r")
        kept = np.delete(np.arange(len(source)), bad)
        target = self._folder / f"{name}.kept.npy"
        rows = np.lib.format.open_memmap(target, "w+", np.uint8, (len(kept), *source.shape[1:]))
        per_chunk = max(1, _WRITE_BYTES // max(1, source[0].nbytes))
        for start in range(0, len(kept), per_chunk):
            rows[start : start + per_chunk] = source[kept[start : start + per_chunk]]
        del rows, source
        target.replace(self._folder / f"{name}.npy")

    def _advance(self, count: int) -> None:
        self._done += count
        if self._progress is not None:
            self._progress(self._done, self._total)


def _unreadable(paths: list[str]) -> TunerError:
    listed = "".join(f"\n  {path}" for path in paths[:_MAX_LISTED])
    more = f"\n  and {len(paths) - _MAX_LISTED} more" if len(paths) > _MAX_LISTED else ""
    return TunerError(
        f"data.path: {len(paths)} image file(s) could not be read:{listed}{more}\n"
        "Fix or remove them, or set data.skip_bad_images: true to leave them out."
    )


def _fingerprint(folder: Path, names: tuple[str, ...]) -> str:
    """SHA-256 of the class names, then each array's dtype, shape and bytes, in
    :data:`tuner.data.cache.ARRAYS` order, read back in chunks: equal only for equal data.

    The test arrays count only when they hold images, so data without a test split keeps the
    fingerprint it had before test splits existed (a study made then still runs).
    """
    digest = hashlib.sha256(json.dumps(names).encode())
    arrays = datacache.ARRAYS
    if len(np.load(folder / "test_labels.npy", mmap_mode="r")):
        arrays += datacache.TEST_ARRAYS
    for name in arrays:
        array = np.load(folder / f"{name}.npy", mmap_mode="r")
        dtype = torch.from_numpy(np.empty(0, array.dtype)).dtype  # torch's name, e.g. torch.uint8
        digest.update(f"{dtype}{tuple(array.shape)}".encode())
        flat = array.reshape(-1)
        for start in range(0, len(flat), _WRITE_BYTES):
            digest.update(flat[start : start + _WRITE_BYTES].data)
    return digest.hexdigest()
