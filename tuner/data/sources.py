"""Reading the data sources: one reader per loader kind of the table ``tuner.config.DATA_SOURCES``.

The kinds are scikit-learn's digits, torchvision datasets, an image-folder tree; each source's
record says which kind reads it and with what (class name, folder, files). Each yields uint8
images [N, 1 or 3, H, W] with labels and class names, plus the validation side when the source
defines one (a test split, a val/ folder).
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets

from tuner.config import DATA_SOURCES, DataConfig, SourceInfo
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
    info = source_info(cfg)
    if info.test_split == "never":
        _require_holdout(cfg, f"the {info.name} source has none")
    return READERS[info.loader].load(cfg, info)


def source_info(cfg: DataConfig) -> SourceInfo:
    """The table's record of ``cfg.source``, or a TunerError that lists the known ones."""
    info = DATA_SOURCES.get(cfg.source)
    if info is None:
        raise TunerError(
            f"data.source: unknown {cfg.source!r}; use one of {', '.join(DATA_SOURCES)}."
        )
    return info


def source_files(cfg: DataConfig) -> list[Path]:
    """The files ``cfg.source`` reads, for the cache key (absent ones are not listed: loading
    will say why)."""
    info = source_info(cfg)
    return READERS[info.loader].files(cfg, info)


def source_versions(cfg: DataConfig) -> dict[str, str]:
    """Installed packages whose version stands for the source files they ship."""
    return READERS[source_info(cfg).loader].versions()


def _require_holdout(cfg: DataConfig, why: str) -> None:
    if cfg.val_source == "test":
        raise TunerError(f"data.val_source: 'test' needs a test split, but {why}; use holdout.")


def _files_under(folder: Path) -> list[Path]:
    """Every file below ``folder``, sorted; none when it is not a folder."""
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


# --- digits: scikit-learn's bundled copy ----------------------------------------------------


def _load_digits(cfg: DataConfig, info: SourceInfo) -> LoadedSource:
    from sklearn.datasets import load_digits  # slow to import; only this source needs it

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)  # 0..16 -> 0..255
    split = Split.whole(torch.from_numpy(images).unsqueeze(1), digits.target.astype(np.int64))
    return LoadedSource(split, None, tuple(str(name) for name in digits.target_names))


def _digits_files(cfg: DataConfig, info: SourceInfo) -> list[Path]:
    spec = importlib.util.find_spec("sklearn")
    folder = Path(spec.origin).parent / "datasets" / "data"
    return [folder / name for name in info.files if (folder / name).is_file()]


def _sklearn_version() -> dict[str, str]:
    """scikit-learn's version stands for the digits file it bundles."""
    return {"scikit-learn": importlib.metadata.version("scikit-learn")}


# --- torchvision datasets: a class reading its files under data.root ------------------------


def _load_torchvision(cfg: DataConfig, info: SourceInfo) -> LoadedSource:
    """torchvision's dataset class on its folder under data.root, or the source's original
    files in data.root itself; the official test split only where it is used."""
    root = Path(cfg.root).expanduser()
    wants_test = cfg.val_source == "test" or cfg.test_source == "auto"
    if _reads_originals(cfg, info):
        classes = tuple(getattr(datasets, info.torchvision_class).classes)
        train = _original_split(root, info, train=True)
        test = _original_split(root, info, train=False) if wants_test else None
    else:
        dataset = _open_torchvision(info, root, train=True, download=cfg.download)
        classes, train = tuple(dataset.classes), _torchvision_split(dataset)
        test = None
        if wants_test:
            test = _torchvision_split(_open_torchvision(info, root, train=False, download=False))
    source = LoadedSource(train, None, classes)
    if test is None:
        return source
    if cfg.val_source == "test":  # validation takes the test split; a holdout is the test
        return replace(source, val=test)
    return replace(source, test=test)


def _open_torchvision(info: SourceInfo, root: Path, *, train: bool, download: bool):
    """The torchvision dataset, or a TunerError that says where its files must be."""
    where = root / info.folder
    try:
        return getattr(datasets, info.torchvision_class)(str(root), train=train, download=download)
    except Exception as exc:  # torchvision fails in many ways: RuntimeError, URLError, unpickling
        if download:
            raise TunerError(
                f"data.download: downloading {info.title} into {root} failed ({exc}). Without "
                f"network access, put {', '.join(info.files)} in {where} by hand and set "
                "data.download: false."
            ) from exc
        missing = [name for name in info.files if not (where / name).is_file()]
        if missing:
            detail = f"; missing {', '.join(missing)}" if where.is_dir() else ""
            raise TunerError(
                f"data.root: {info.title} files not found under {root} (expected {where}{detail}"
                f"{_originals_hint(info, root)}). Put the dataset there, or set data.download: "
                "true on a machine with network access."
            ) from exc
        raise TunerError(
            f"data.root: the {info.title} files in {where} are incomplete or corrupted ({exc}). "
            "Replace them with a fresh copy, or delete them and set data.download: true."
        ) from exc


def _torchvision_split(dataset: datasets.VisionDataset) -> Split:
    data = torch.as_tensor(dataset.data)  # CIFAR: numpy [N, H, W, 3]; MNIST: tensor [N, H, W]
    images = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)
    return Split.whole(images, np.asarray(dataset.targets, dtype=np.int64))


def _torchvision_files(cfg: DataConfig, info: SourceInfo) -> list[Path]:
    root = Path(cfg.root).expanduser().absolute()
    if _reads_originals(cfg, info):
        return [root / name for name in info.originals]
    return _files_under(root / info.folder)


def _reads_originals(cfg: DataConfig, info: SourceInfo) -> bool:
    """Whether ``data.root`` holds the source's original files and torchvision's folder is not
    there to read instead (torchvision's layout wins where both are)."""
    root = Path(cfg.root).expanduser()
    if not info.originals or (root / info.folder).is_dir():
        return False
    return all((root / name).is_file() for name in info.originals)


def _originals_hint(info: SourceInfo, root: Path) -> str:
    """How else the files may be given: the original files in data.root, a Debian package."""
    if not info.originals:
        return ""
    hint = f", or its original files {', '.join(info.originals)} in {root} itself"
    if info.package:
        hint += f" (`apt-get install {info.package}` puts them in /usr/share/datasets/...)"
    return hint


def _original_split(root: Path, info: SourceInfo, *, train: bool) -> Split:
    """One side of an MNIST-family source from its original gzipped idx files."""
    images, labels = (
        read_idx(root / name)
        for name in info.originals
        if name.startswith("train" if train else "t10k")
    )
    return Split.whole(torch.from_numpy(images).unsqueeze(1), labels.astype(np.int64))


def read_idx(path: Path) -> np.ndarray:
    """An idx file (the MNIST family's format), gzipped or not: two zero bytes, the element
    type (0x08: unsigned bytes), the number of dimensions, each dimension as a big-endian
    int32, then the data."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise TunerError(f"data.root: {path} is not a readable gzip file ({exc}).") from None
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise TunerError(f"data.root: {path} is not an idx file of unsigned bytes.")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise TunerError(
            f"data.root: {path} is truncated ({body.size} bytes of data, {shape} needs "
            f"{int(np.prod(shape))}); replace it with a fresh copy."
        )
    return body.reshape(shape).copy()  # writable, as torch wants


# --- folder: an image-folder tree at data.path ----------------------------------------------


_FOLDER_SPLITS = ("train", "val", "test")


def _load_folder(cfg: DataConfig, info: SourceInfo) -> LoadedSource:
    """An ImageFolder tree: one folder per class, or ``train/`` with ``val/``, ``test/`` or both,
    each with the same class folders; a side without its folder is a holdout of ``train/``.

    Only the files of the classes in ``data.classes`` are kept; nothing is decoded yet.
    """
    hint = "point it at a folder with one subfolder per class"
    if cfg.path is None:
        raise TunerError(f"data.path: not set, but the {info.name} source needs it; {hint}.")
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


def _folder_files(cfg: DataConfig, info: SourceInfo) -> list[Path]:
    return _files_under(Path(cfg.path or "").expanduser().absolute())


@dataclass(frozen=True)
class Reader:
    """How one loader kind (``tuner.config.LOADERS``) lists and reads a source of its kind."""

    load: Callable[[DataConfig, SourceInfo], LoadedSource]
    files: Callable[[DataConfig, SourceInfo], list[Path]]  # what the cache key hashes
    versions: Callable[[], dict[str, str]] = dict  # packages that ship the files


READERS: dict[str, Reader] = {
    "digits": Reader(_load_digits, _digits_files, _sklearn_version),
    "torchvision": Reader(_load_torchvision, _torchvision_files),
    "folder": Reader(_load_folder, _folder_files),
}
"""Each loader kind's reader; a test checks that they are exactly ``tuner.config.LOADERS``."""
