"""Which images go where: the classes kept, merged and capped, and the train/val/test sides.

Everything here is seeded by ``data.split_seed`` and works on labels only, so the split is
decided before a single image is decoded, and the same config always splits alike.
"""

from __future__ import annotations

import numpy as np

from tuner.config import DataConfig
from tuner.data.sources import LoadedSource, Split
from tuner.errors import TunerError

TEST_SOURCE = "the source's own test split"
TEST_HOLDOUT = "a stratified holdout"
TEST_NONE = "none"
"""Where a dataset's held-out test images come from (:attr:`PreparedData.test_split`)."""


def split_sides(cfg: DataConfig, loaded: LoadedSource, test_split: str) -> dict[str, Split]:
    """The train, val and test sides: what the source gives, the rest held out of its
    training pool (capped first at ``per_class``), per class and seeded by ``split_seed``."""
    train = loaded.train
    cap_rng, split_rng = (np.random.default_rng([cfg.split_seed, i]) for i in range(2))
    if cfg.per_class is not None:
        train = train.take(_cap_per_class(train.labels, cfg.per_class, cap_rng))
    held = _stratified_split(
        train.labels,
        cfg.val_fraction if loaded.val is None else 0.0,
        cfg.test_fraction if test_split == TEST_HOLDOUT else 0.0,
        split_rng,
    )
    return {
        "train": train.take(held[0]),
        "val": loaded.val if loaded.val is not None else train.take(held[1]),
        "test": loaded.test if test_split == TEST_SOURCE else train.take(held[2]),  # none: empty
    }


def test_split_of(cfg: DataConfig, loaded: LoadedSource) -> str:
    """Where the test images come from: the source's test split, a holdout, or nowhere."""
    if cfg.test_source == "none":
        return TEST_NONE
    if cfg.test_source == "auto" and loaded.test is not None:
        return TEST_SOURCE
    return TEST_HOLDOUT


def subset_mapping(
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


def relabel_mapping(
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
    labels: np.ndarray, val_fraction: float, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) indices: per class a seeded share to val and to test (each at least 1
    where the fraction is not 0 and the class has room), the rest to train.

    With no test share this draws exactly what it did before test splits existed.
    """
    sides: list[list[np.ndarray]] = [[np.empty(0, dtype=np.int64)] for _ in range(3)]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n = len(members)
        n_val = min(max(round(n * val_fraction), 1), n - 1) if val_fraction else 0
        n_test = min(max(round(n * test_fraction), 1), n - 1 - n_val) if test_fraction else 0
        cuts = np.split(members, [n_val, n_val + n_test])
        for side, part in zip((1, 2, 0), cuts, strict=True):
            sides[side].append(part)
    train, val, test = (np.sort(np.concatenate(side)) for side in sides)
    return train, val, test


def check_classes(
    names: tuple[str, ...], labels: dict[str, np.ndarray], cfg: DataConfig, test_split: str
) -> None:
    """Refuse, naming the key to change, data that leaves a class without images on a side."""
    if len(names) < 2:
        raise TunerError(
            f"data: {len(names)} class ({', '.join(names)}) left from source {cfg.source!r}; a "
            "classifier needs at least 2. Add classes, or widen data.classes / data.relabel."
        )
    counts = {side: np.bincount(found, minlength=len(names)) for side, found in labels.items()}
    for i, name in enumerate(names):
        n_train = counts["train"][i]
        if n_train == 0:
            raise TunerError(f"data: class {name!r} has no training images; add some or drop it.")
        if counts["val"][i] == 0:
            raise TunerError(
                f"data: class {name!r} has no validation images ({n_train} in training); raise "
                f"data.val_fraction (now {cfg.val_fraction}) or add images of that class."
            )
        if test_split != TEST_NONE and counts["test"][i] == 0:
            fix = (
                f"raise data.test_fraction (now {cfg.test_fraction})"
                if test_split == TEST_HOLDOUT
                else "add test images of that class"
            )
            raise TunerError(
                f"data: class {name!r} has no test images ({n_train} in training); {fix}, add "
                "images of that class, or set data.test_source: none."
            )
