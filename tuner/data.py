"""Data sources -> one prepared, split, fixed-size uint8 dataset.

Every source (scikit-learn's digits, four torchvision datasets, an ImageFolder tree) is
decoded once, filtered (``classes``), merged (``relabel``), capped (``per_class``), split
and resized to ``image_size``. The result is a handful of uint8 tensors small enough to
move to the accelerator once, so that training never touches files or PIL again;
augmentation happens on the device (see :mod:`tuner.augment`). The same ``DataConfig``
always yields the same tensors, checked by :attr:`PreparedData.fingerprint`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision import datasets
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from tuner.config import DATA_SOURCES, DataConfig
from tuner.errors import TunerError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
"""File name endings (case-insensitive) that the folder source treats as images."""

_MAX_LISTED = 20  # bad files named in one error message
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


@dataclass(frozen=True)
class _Split:
    """One side of the data before resizing: uint8 [N, 1 or 3, H, W] and labels."""

    images: torch.Tensor
    labels: np.ndarray

    def take(self, index: np.ndarray) -> _Split:
        return _Split(self.images[torch.from_numpy(index)], self.labels[index])

    def remap(self, mapping: np.ndarray) -> _Split:
        """Relabel with ``mapping[old] = new``, dropping the samples whose new label is -1."""
        new = mapping[self.labels]
        kept = np.flatnonzero(new >= 0)
        return _Split(self.images[torch.from_numpy(kept)], new[kept])


@dataclass(frozen=True)
class _Loaded:
    """A source as read: ``val`` is None when the validation side is a holdout of train."""

    train: _Split
    val: _Split | None
    class_names: tuple[str, ...]
    skipped: tuple[str, ...] = ()

    def remap(self, mapping: np.ndarray, class_names: tuple[str, ...]) -> _Loaded:
        val = self.val.remap(mapping) if self.val is not None else None
        return replace(self, train=self.train.remap(mapping), val=val, class_names=class_names)


def prepare_data(cfg: DataConfig) -> PreparedData:
    """Read ``cfg.source`` and return the dataset every trial uses.

    Steps, in order: load; keep ``classes`` (in the given order); merge with ``relabel``;
    cap each final class at ``per_class`` images (a seeded sample; only the training side
    when the validation set is given by the source, the whole pool before splitting
    otherwise); split a stratified holdout when needed; resize with :func:`fit_square`.

    Raises:
        TunerError: for every unusable input (missing files, unknown class names, a class
            left without training or validation images, ...), naming the key or path.
    """
    loaded = _load_source(cfg)
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

    tensors = (
        _fit_all(train.images, cfg.image_size),
        torch.from_numpy(train.labels),
        _fit_all(val.images, cfg.image_size),
        torch.from_numpy(val.labels),
    )
    return PreparedData(*tensors, names, _fingerprint(names, tensors), loaded.skipped)


def fit_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [C,H,W] or [N,C,H,W] (C = 1 or 3) -> uint8 [..., 3, size, size].

    Resizes the shorter side to ``size`` (bilinear, antialiased, as torchvision's
    ``Resize(size)``) and center-crops, then repeats a single channel three times. Training
    data and single files at prediction time both go through here, so they match.
    """
    if images.dtype != torch.uint8 or images.ndim not in (3, 4) or images.shape[-3] not in (1, 3):
        raise ValueError(
            "fit_square expects uint8 [C,H,W] or [N,C,H,W] with 1 or 3 channels, "
            f"got {images.dtype} {tuple(images.shape)}"
        )
    if tuple(images.shape[-2:]) != (size, size):
        images = TF.resize(images, [size], interpolation=InterpolationMode.BILINEAR, antialias=True)
        images = TF.center_crop(images, [size, size])
    if images.shape[-3] == 1:
        images = images.expand(*images.shape[:-3], 3, size, size)
    return images.contiguous()


def load_image_file(path: Path) -> torch.Tensor:
    """Decode one image file into uint8 [3, H, W] RGB with :func:`pil_to_tensor`.

    Raises:
        TunerError: naming ``path`` when the file cannot be read or decoded.
    """
    try:
        with Image.open(path) as image:
            return pil_to_tensor(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # PIL reports broken files as any of these (SyntaxError for malformed PNG chunks).
        raise TunerError(f"{path}: cannot read this image ({exc}). Fix or replace it.") from exc


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image of any common mode -> uint8 [3, H, W] RGB, exactly as files are decoded.

    Applies the EXIF orientation; composites transparency (RGBA, LA, palette with a
    transparent colour) over white, so hidden pixels do not leak into the image; scales
    16-bit greyscale to 8 bits instead of clipping it as PIL's ``convert`` would.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I"):  # I;16 variants, and I (32-bit) as TIFF gives 16-bit data
        wide = np.clip(np.asarray(image).astype(np.float64), 0, 65535)
        grey = torch.from_numpy(np.round(wide / 257).astype(np.uint8))
        return grey.expand(3, *grey.shape).contiguous()
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    rgb = np.array(image.convert("RGB"))  # a writable copy, as torch.from_numpy wants
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


# --- sources -------------------------------------------------------------------------------


def _load_source(cfg: DataConfig) -> _Loaded:
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


def _load_digits(cfg: DataConfig) -> _Loaded:
    _require_holdout(cfg, "the digits source has none")
    from sklearn.datasets import load_digits  # slow to import; only this source needs it

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)  # 0..16 -> 0..255
    split = _Split(torch.from_numpy(images).unsqueeze(1), digits.target.astype(np.int64))
    return _Loaded(split, None, tuple(str(name) for name in digits.target_names))


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


def _load_torchvision(cfg: DataConfig, spec: _TorchvisionSource) -> _Loaded:
    root = Path(cfg.root).expanduser()
    train = _open_torchvision(spec, root, train=True, download=cfg.download)
    if cfg.val_source != "test":
        return _Loaded(_torchvision_split(train), None, tuple(train.classes))
    test = _open_torchvision(spec, root, train=False, download=False)
    return _Loaded(_torchvision_split(train), _torchvision_split(test), tuple(train.classes))


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


def _torchvision_split(dataset: datasets.VisionDataset) -> _Split:
    data = torch.as_tensor(dataset.data)  # CIFAR: numpy [N, H, W, 3]; MNIST: tensor [N, H, W]
    images = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)
    return _Split(images, np.asarray(dataset.targets, dtype=np.int64))


def _load_folder(cfg: DataConfig) -> _Loaded:
    """An ImageFolder tree; ``train/`` and ``val/`` subfolders, when both exist, are the split.

    Files are decoded and resized one at a time, so memory holds only the small versions
    (the same result as resizing later: :func:`fit_square` works per image).
    """
    hint = "point it at a folder with one subfolder per class"
    if cfg.path is None:
        raise TunerError(f"data.path: not set, but the folder source needs it; {hint}.")
    root = Path(cfg.path).expanduser()
    if not root.is_dir():
        problem = "is not a directory" if root.exists() else "does not exist"
        raise TunerError(f"data.path: {root} {problem}; {hint}.")
    train_dir, val_dir = root / "train", root / "val"
    if train_dir.is_dir() != val_dir.is_dir():
        raise TunerError(
            f"data.path: {root} has only one of train/ and val/; give both (a fixed split) or "
            "neither (one folder per class, split by data.val_fraction)."
        )
    if train_dir.is_dir():
        trees = [_scan_classes(train_dir), _scan_classes(val_dir)]
        differ = sorted(trees[0].keys() ^ trees[1].keys())
        if differ:
            raise TunerError(
                f"data.path: the class folders of {train_dir} and {val_dir} must match; "
                f"{', '.join(differ)} only in one of them."
            )
    else:
        _require_holdout(cfg, f"{root} has no train/ and val/ subfolders")
        trees = [_scan_classes(root)]
    names = tuple(trees[0])
    bad: list[Path] = []
    wanted = set(cfg.classes or names)
    splits = [_decode_tree(tree, wanted, cfg.image_size, bad) for tree in trees]
    if bad and not cfg.skip_bad_images:
        listed = "".join(f"\n  {path}" for path in bad[:_MAX_LISTED])
        more = f"\n  and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
        raise TunerError(
            f"data.path: {len(bad)} image file(s) could not be read:{listed}{more}\n"
            "Fix or remove them, or set data.skip_bad_images: true to leave them out."
        )
    val = splits[1] if len(splits) > 1 else None
    return _Loaded(splits[0], val, names, tuple(map(str, bad)))


def _scan_classes(folder: Path) -> dict[str, list[Path]]:
    """Class name -> its image files (recursive, sorted); hidden files and folders ignored."""
    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise TunerError(
            f"data.path: no class folders in {folder}; put images in {folder}/<class>/."
        )
    tree = {}
    for class_dir in class_dirs:
        files = sorted(
            p
            for p in class_dir.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
        )
        if not files:
            raise TunerError(
                f"data.path: class folder {class_dir} has no images "
                f"({' '.join(IMAGE_EXTENSIONS)}); add images or remove the folder."
            )
        tree[class_dir.name] = files
    return tree


def _decode_tree(
    tree: dict[str, list[Path]], wanted: set[str], size: int, bad: list[Path]
) -> _Split:
    """Decode and resize the wanted classes' files; unreadable ones are appended to ``bad``."""
    images, labels = [], []
    for label, (name, files) in enumerate(tree.items()):
        if name not in wanted:
            continue  # dropped by data.classes: no need to decode it
        for path in files:
            try:
                images.append(fit_square(load_image_file(path), size))
                labels.append(label)
            except TunerError:
                bad.append(path)
    stacked = torch.stack(images) if images else torch.empty((0, 3, size, size), dtype=torch.uint8)
    return _Split(stacked, np.asarray(labels, dtype=np.int64))


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


def _fit_all(images: torch.Tensor, size: int) -> torch.Tensor:
    return torch.cat([fit_square(chunk, size) for chunk in images.split(_RESIZE_CHUNK)])


def _fingerprint(names: tuple[str, ...], tensors: tuple[torch.Tensor, ...]) -> str:
    digest = hashlib.sha256(json.dumps(names).encode())
    for tensor in tensors:
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.contiguous().numpy().data)
    return digest.hexdigest()
