"""The data sources: scikit-learn's digits, torchvision datasets, an image-folder tree.

Each yields uint8 images [N, 1 or 3, H, W] with labels and class names, plus the
validation side when the source defines one (a test split, a val/ folder).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets

from tuner.config import DATA_SOURCES, DataConfig
from tuner.errors import TunerError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
"""File name endings (case-insensitive) that the folder source treats as images."""


@dataclass(frozen=True)
class Split:
    """One side of the data before resizing: the ``rows`` of a ``pool`` that it keeps.

    The pool is uint8 [M, 1 or 3, H, W] for the sources read in bulk, or the image files of
    the folder source, which are decoded only when the prepared arrays are written, and only
    those selected. Selecting (:meth:`take`, :meth:`remap`) only narrows ``rows``.
    """

    pool: torch.Tensor | tuple[Path, ...]
    labels: np.ndarray
    rows: np.ndarray  # one index into ``pool`` per label

    @classmethod
    def whole(cls, pool: torch.Tensor | tuple[Path, ...], labels: np.ndarray) -> Split:
        return cls(pool, labels, np.arange(len(labels)))

    def take(self, index: np.ndarray) -> Split:
        return Split(self.pool, self.labels[index], self.rows[index])

    def remap(self, mapping: np.ndarray) -> Split:
        """Relabel with ``mapping[old] = new``, dropping the samples whose new label is -1."""
        new = mapping[self.labels]
        kept = np.flatnonzero(new >= 0)
        return Split(self.pool, new[kept], self.rows[kept])

    def images(self, start: int, stop: int) -> torch.Tensor:
        """The pixels of samples [start, stop) of a tensor pool."""
        return self.pool[torch.from_numpy(self.rows[start:stop])]

    def files(self) -> list[Path]:
        """The image file of every sample of a folder pool, in order."""
        return [self.pool[row] for row in self.rows]


@dataclass(frozen=True)
class LoadedSource:
    """A source as read: ``val`` (``test``) is None when the source gives no validation (test)
    side of its own, or validation already takes the source's test split."""

    train: Split
    val: Split | None
    class_names: tuple[str, ...]
    test: Split | None = None

    def remap(self, mapping: np.ndarray, class_names: tuple[str, ...]) -> LoadedSource:
        val, test = (s.remap(mapping) if s is not None else None for s in (self.val, self.test))
        return LoadedSource(self.train.remap(mapping), val, class_names, test)


def load_source(cfg: DataConfig) -> LoadedSource:
    """Read ``cfg.source`` as it is on disk (no subset, cap or split yet).

    The folder source only lists its files here; the others are read in bulk. The source's
    own test split (a torchvision test set, a ``test/`` folder) is read only where
    ``data.test_source: auto`` may use it.
    """
    if cfg.source == "digits":
        return _load_digits(cfg)
    if cfg.source == "folder":
        return _load_folder(cfg)
    if cfg.source in _TORCHVISION:
        return _load_torchvision(cfg, _TORCHVISION[cfg.source])
    raise TunerError(f"data.source: unknown {cfg.source!r}; use one of {', '.join(DATA_SOURCES)}.")


def _require_holdout(cfg: DataConfig, why: str) -> None:
    if cfg.val_source == "test":
        raise TunerError(f"data.val_source: 'test' needs a test split, but {why}; use holdout.")


def _load_digits(cfg: DataConfig) -> LoadedSource:
    _require_holdout(cfg, "the digits source has none")
    from sklearn.datasets import load_digits  # slow to import; only this source needs it

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)  # 0..16 -> 0..255
    split = Split.whole(torch.from_numpy(images).unsqueeze(1), digits.target.astype(np.int64))
    return LoadedSource(split, None, tuple(str(name) for name in digits.target_names))


@dataclass(frozen=True)
class _TorchvisionSource:
    """A torchvision dataset class and the files it reads under ``data.root``."""

    title: str
    dataset: type[datasets.VisionDataset]
    folder: str
    files: tuple[str, ...]


_MNIST_FILES = tuple(
    f"{s}-{k}-ubyte" for s in ("train", "t10k") for k in ("images-idx3", "labels-idx1")
)
_CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
_TORCHVISION = {
    "cifar10": _TorchvisionSource(
        "CIFAR-10", datasets.CIFAR10, "cifar-10-batches-py", _CIFAR10_FILES
    ),
    "cifar100": _TorchvisionSource(
        "CIFAR-100", datasets.CIFAR100, "cifar-100-python", ("train", "test", "meta")
    ),
    "mnist": _TorchvisionSource("MNIST", datasets.MNIST, "MNIST/raw", _MNIST_FILES),
    "fashionmnist": _TorchvisionSource(
        "Fashion-MNIST", datasets.FashionMNIST, "FashionMNIST/raw", _MNIST_FILES
    ),
}


def torchvision_folder(source: str) -> str:
    """The folder under ``data.root`` that a torchvision source reads its files from."""
    return _TORCHVISION[source].folder


def _load_torchvision(cfg: DataConfig, spec: _TorchvisionSource) -> LoadedSource:
    root = Path(cfg.root).expanduser()
    train = _open_torchvision(spec, root, train=True, download=cfg.download)
    source = LoadedSource(_torchvision_split(train), None, tuple(train.classes))
    if cfg.val_source != "test" and cfg.test_source != "auto":
        return source
    test = _torchvision_split(_open_torchvision(spec, root, train=False, download=False))
    if cfg.val_source == "test":  # validation takes the test split; a holdout is the test
        return replace(source, val=test)
    return replace(source, test=test)


def _open_torchvision(spec: _TorchvisionSource, root: Path, *, train: bool, download: bool):
    """The torchvision dataset, or a TunerError that says where its files must be."""
    where = root / spec.folder
    try:
        return spec.dataset(str(root), train=train, download=download)
    except Exception as exc:  # torchvision fails in many ways: RuntimeError, URLError, unpickling
        if download:
            raise TunerError(
                f"data.download: downloading {spec.title} into {root} failed ({exc}). Without "
                f"network access, put {', '.join(spec.files)} in {where} by hand and set "
                "data.download: false."
            ) from exc
        missing = [name for name in spec.files if not (where / name).is_file()]
        if missing:
            detail = f"; missing {', '.join(missing)}" if where.is_dir() else ""
            raise TunerError(
                f"data.root: {spec.title} files not found under {root} (expected {where}{detail}). "
                "Put the dataset there, or set data.download: true on a machine with network "
                "access."
            ) from exc
        raise TunerError(
            f"data.root: the {spec.title} files in {where} are incomplete or corrupted ({exc}). "
            "Replace them with a fresh copy, or delete them and set data.download: true."
        ) from exc


def _torchvision_split(dataset: datasets.VisionDataset) -> Split:
    data = torch.as_tensor(dataset.data)  # CIFAR: numpy [N, H, W, 3]; MNIST: tensor [N, H, W]
    images = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)
    return Split.whole(images, np.asarray(dataset.targets, dtype=np.int64))


_FOLDER_SPLITS = ("train", "val", "test")


def _load_folder(cfg: DataConfig) -> LoadedSource:
    """An ImageFolder tree: one folder per class, or ``train/`` with ``val/``, ``test/`` or both,
    each with the same class folders; a side without its folder is a holdout of ``train/``.

    Only the files of the classes in ``data.classes`` are kept; nothing is decoded yet.
    """
    hint = "point it at a folder with one subfolder per class"
    if cfg.path is None:
        raise TunerError(f"data.path: not set, but the folder source needs it; {hint}.")
    root = Path(cfg.path).expanduser()
    if not root.is_dir():
        problem = "is not a directory" if root.exists() else "does not exist"
        raise TunerError(f"data.path: {root} {problem}; {hint}.")
    present = [name for name in _FOLDER_SPLITS if (root / name).is_dir()]
    if not present:
        trees = {"train": _scan_classes(root)}
    elif "train" not in present or present == ["train"]:
        raise TunerError(
            f"data.path: {root} has {' and '.join(f'{name}/' for name in present)} but no "
            f"{'train/' if 'train' not in present else 'val/ or test/'}: give train/ with val/, "
            "test/ or both (a side without its folder is held out of train/), or one folder "
            "per class (split by data.val_fraction and data.test_fraction)."
        )
    else:
        trees = {name: _scan_classes(root / name) for name in present}
    names = tuple(trees["train"])
    for name, tree in trees.items():
        differ = sorted(tree.keys() ^ set(names))
        if differ:
            raise TunerError(
                f"data.path: the class folders of {root / 'train'} and {root / name} must "
                f"match; {', '.join(differ)} only in one of them."
            )
    if "val" not in trees:
        _require_holdout(cfg, f"{root} has no val/ subfolder")
    wanted = set(cfg.classes or names)
    splits = {name: Split.whole(*_wanted_files(tree, wanted)) for name, tree in trees.items()}
    test = splits.get("test") if cfg.test_source == "auto" else None
    return LoadedSource(splits["train"], splits.get("val"), names, test)


def _scan_classes(folder: Path) -> dict[str, list[Path]]:
    """Class name -> its image files (recursive, sorted); hidden files and folders ignored."""
    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise TunerError(
            f"data.path: no class folders in {folder}; put images in {folder}/<class>/."
        )
    tree = {}
    for class_dir in class_dirs:
        files = find_images(class_dir)
        if not files:
            raise TunerError(
                f"data.path: class folder {class_dir} has no images "
                f"({' '.join(IMAGE_EXTENSIONS)}); add images or remove the folder."
            )
        tree[class_dir.name] = files
    return tree


def find_images(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively and sorted; hidden files are left out."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )


def _wanted_files(tree: dict[str, list[Path]], wanted: set[str]) -> tuple[list[Path], np.ndarray]:
    """The files of the wanted classes, in tree order, and their labels (class index)."""
    files, labels = [], []
    for label, (name, class_files) in enumerate(tree.items()):
        if name in wanted:  # a class dropped by data.classes is never decoded
            files += class_files
            labels += [label] * len(class_files)
    return tuple(files), np.asarray(labels, dtype=np.int64)
