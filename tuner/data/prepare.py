"""A data source -> one prepared, split, fixed-size uint8 dataset.

Every source (:mod:`tuner.sources`: scikit-learn's digits, four torchvision datasets, an
image-folder tree) is decoded once, filtered (``classes``), merged (``relabel``), capped
(``per_class``), split and resized to ``image_size`` (:mod:`tuner.images`). The result is a
handful of uint8 tensors small enough to move to the accelerator once, so that training
never touches files or PIL again; augmentation happens on the device (see
:mod:`tuner.augment`). The same ``DataConfig`` always yields the same tensors, checked by
:attr:`PreparedData.fingerprint`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tuner.config import DataConfig
from tuner.data import cache as datacache
from tuner.data.images import fit_square
from tuner.data.sources import Progress, load_source
from tuner.errors import TunerError

_RESIZE_CHUNK = 1024  # images resized per call: bounds the float buffers of the resize


@dataclass(frozen=True, eq=False)
class PreparedData:
    """The decoded, split and resized dataset every trial trains and validates on.

    Images are uint8 [N, 3, S, S] on the CPU (S = ``DataConfig.image_size``); labels are
    int64 indices into ``class_names``. ``fingerprint`` hashes the content, so a worker can
    verify it rebuilt exactly the data the study was created with.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    class_names: tuple[str, ...]
    fingerprint: str
    skipped_files: tuple[str, ...] = ()

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
    cfg: DataConfig, cache_dir: Path | None = None, progress: Progress | None = None
) -> PreparedData:
    """The dataset every trial uses, from the host's disk cache when it has it.

    With ``cache_dir`` the result is read from (or, the first time, written to) the
    :mod:`tuner.datacache` entry for this config and these source files, memory-mapped,
    so every worker process on the host shares one copy and nothing is decoded twice.
    ``progress`` follows the decoding and resizing when the data has to be built.
    """
    if cache_dir is None:
        return _prepare(cfg, progress)
    key = datacache.source_key(cfg)
    found = datacache.load(cache_dir, key)
    if found is None:
        data = _prepare(cfg, progress)
        arrays = {
            "train_images": data.train_images,
            "train_labels": data.train_labels,
            "val_images": data.val_images,
            "val_labels": data.val_labels,
        }
        meta = {
            "class_names": data.class_names,
            "fingerprint": data.fingerprint,
            "skipped_files": data.skipped_files,
        }
        datacache.store(cache_dir, key, arrays, meta)
        found = datacache.load(cache_dir, key)
        if found is None:  # written, but not readable back (a full disk): go on without it
            return data
    arrays, meta = found
    return PreparedData(
        **arrays,
        class_names=tuple(meta["class_names"]),
        fingerprint=meta["fingerprint"],
        skipped_files=tuple(meta["skipped_files"]),
    )


def _prepare(cfg: DataConfig, progress: Progress | None) -> PreparedData:
    """Read ``cfg.source`` and return the dataset every trial uses.

    Steps, in order: load; keep ``classes`` (in the given order); merge with ``relabel``;
    cap each final class at ``per_class`` images (a seeded sample; only the training side
    when the validation set is given by the source, the whole pool before splitting
    otherwise); split a stratified holdout when needed; resize with :func:`fit_square`.

    Raises:
        TunerError: for every unusable input (missing files, unknown class names, a class
            left without training or validation images, ...), naming the key or path.
    """
    loaded = load_source(cfg, progress)
    if cfg.classes is not None:
        loaded = loaded.remap(*_subset_mapping(loaded.class_names, cfg.classes))
    if cfg.relabel is not None:
        loaded = loaded.remap(*_relabel_mapping(loaded.class_names, cfg.relabel))
    train, val, names = loaded.train, loaded.val, loaded.class_names
    cap_rng, split_rng = (np.random.default_rng([cfg.split_seed, i]) for i in range(2))
    if cfg.per_class is not None:
        train = train.take(_cap_per_class(train.labels, cfg.per_class, cap_rng))
    if val is None:
        train_index, val_index = _stratified_split(train.labels, cfg.val_fraction, split_rng)
        train, val = train.take(train_index), train.take(val_index)
    _check_classes(names, train.labels, val.labels, cfg)

    total = len(train.labels) + len(val.labels)
    train_images = _fit_all(train.images, cfg.image_size, progress, 0, total)
    tensors = (
        train_images,
        torch.from_numpy(train.labels),
        _fit_all(val.images, cfg.image_size, progress, len(train_images), total),
        torch.from_numpy(val.labels),
    )
    return PreparedData(*tensors, names, _fingerprint(names, tensors), loaded.skipped)


# --- selection and split -------------------------------------------------------------------


def _subset_mapping(
    names: tuple[str, ...], classes: tuple[str, ...]
) -> tuple[np.ndarray, tuple[str, ...]]:
    """data.classes as (old label -> its position in ``classes`` or -1, ``classes``)."""
    for name in classes:
        if name not in names:
            raise TunerError(
                f"data.classes: no class named {name!r}; available: {', '.join(names)}"
            )
    if len(set(classes)) != len(classes):
        raise TunerError(f"data.classes: {list(classes)} names a class twice; list each once.")
    mapping = np.array([classes.index(n) if n in classes else -1 for n in names], dtype=np.int64)
    return mapping, tuple(classes)


def _relabel_mapping(
    names: tuple[str, ...], relabel: tuple[tuple[str, tuple[str, ...]], ...]
) -> tuple[np.ndarray, tuple[str, ...]]:
    """data.relabel as (old label -> index of its new class, new class names in order)."""
    new_of: dict[str, str] = {}
    for new_name, olds in relabel:
        for old in olds:
            if old not in names:
                raise TunerError(
                    f"data.relabel: {new_name!r} takes {old!r}, which is not a kept class; "
                    f"kept: {', '.join(names)}"
                )
            if new_of.setdefault(old, new_name) != new_name:
                raise TunerError(
                    f"data.relabel: {old!r} goes to both {new_of[old]!r} and {new_name!r}; "
                    "map each class to exactly one new class."
                )
    unmapped = [name for name in names if name not in new_of]
    if unmapped:
        raise TunerError(
            f"data.relabel: {', '.join(unmapped)} not mapped to a new class; map every kept "
            "class, or drop it with data.classes."
        )
    new_names = tuple(dict.fromkeys(new_name for new_name, _ in relabel))  # a repeat merges
    return np.array([new_names.index(new_of[n]) for n in names], dtype=np.int64), new_names


def _cap_per_class(labels: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of a seeded random sample of at most ``cap`` per class, in original order."""
    keep = [np.empty(0, dtype=np.int64)]
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        keep.append(rng.choice(members, size=cap, replace=False) if len(members) > cap else members)
    return np.sort(np.concatenate(keep))


def _stratified_split(
    labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: per class a seeded ``fraction`` to val, at least 1 if it has 2."""
    train, val = [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.int64)]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = min(max(round(len(members) * fraction), 1), len(members) - 1)
        val.append(members[:n_val])
        train.append(members[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _check_classes(
    names: tuple[str, ...], train: np.ndarray, val: np.ndarray, cfg: DataConfig
) -> None:
    if len(names) < 2:
        raise TunerError(
            f"data: {len(names)} class ({', '.join(names)}) left from source {cfg.source!r}; a "
            "classifier needs at least 2. Add classes, or widen data.classes / data.relabel."
        )
    val_counts = np.bincount(val, minlength=len(names))
    for name, n_train, n_val in zip(
        names, np.bincount(train, minlength=len(names)), val_counts, strict=True
    ):
        if n_train == 0:
            raise TunerError(f"data: class {name!r} has no training images; add some or drop it.")
        if n_val == 0:
            raise TunerError(
                f"data: class {name!r} has no validation images ({n_train} in training); raise "
                f"data.val_fraction (now {cfg.val_fraction}) or add images of that class."
            )


def _fit_all(
    images: torch.Tensor, size: int, progress: Progress | None, done: int, total: int
) -> torch.Tensor:
    fitted = []
    for chunk in images.split(_RESIZE_CHUNK):
        fitted.append(fit_square(chunk, size))
        done += len(chunk)
        if progress is not None:
            progress(done, total)
    return torch.cat(fitted) if fitted else fit_square(images, size)


def _fingerprint(names: tuple[str, ...], tensors: tuple[torch.Tensor, ...]) -> str:
    digest = hashlib.sha256(json.dumps(names).encode())
    for tensor in tensors:
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.contiguous().numpy().data)
    return digest.hexdigest()
