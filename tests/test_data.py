"""prepare_data on real sources: digits, CIFAR-10/MNIST files in their on-disk formats, folders.

The torchvision datasets are written by the tests in the exact formats torchvision reads
(CIFAR pickles, MNIST idx files) and then read by the real torchvision classes; nothing
is downloaded.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
from PIL import Image

from tuner.config import DataConfig
from tuner.data import PreparedData, prepare_data
from tuner.errors import TunerError
from tuner.images import fit_square, load_image_file, pil_to_tensor

CIFAR_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


# --- fixtures: datasets in their real on-disk formats ---------------------------------------


def _cifar_batch(labels: np.ndarray, first_id: int) -> dict:
    """A CIFAR batch dict; red = 20 * label, green = a per-image id, so tests can trace images."""
    n = len(labels)
    images = np.zeros((n, 3, 32, 32), dtype=np.uint8)
    images[:, 0] = (labels * 20)[:, None, None]
    images[:, 1] = (first_id + np.arange(n))[:, None, None]
    images[:, 2, :16] = 255  # top half bright blue: not a flat image
    return {
        "batch_label": f"batch from {first_id}",
        "labels": labels.tolist(),
        "data": images.reshape(n, 3 * 32 * 32),  # row-major CHW, as in the real files
        "filenames": [f"img_{first_id + i}.png" for i in range(n)],
    }


def _write_cifar10(root: Path) -> None:
    """5 train batches of 20 (2 per class) and a test batch of 50 (5 per class)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {
        f"data_batch_{i}": _cifar_batch(np.tile(np.arange(10), 2), 20 * (i - 1))
        for i in range(1, 6)
    }
    batches["test_batch"] = _cifar_batch(np.tile(np.arange(10), 5), 100)
    batches["batches.meta"] = {
        "label_names": list(CIFAR_NAMES),
        "num_cases_per_batch": 20,
        "num_vis": 3072,
    }
    for name, content in batches.items():
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))


@pytest.fixture
def cifar_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small CIFAR-10 in the real format, read by the real torchvision.datasets.CIFAR10.

    torchvision compares every CIFAR file against the md5 of the official release, which
    no small fixture can match. Like torchvision's own dataset tests (datasets_utils.py
    patches ``check_integrity`` for its fake data), we replace only that checksum test with
    an existence test; parsing the pickles, labels and class names stays torchvision's.
    """
    _write_cifar10(tmp_path)
    monkeypatch.setattr(
        torchvision.datasets.cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath)
    )
    return tmp_path


def _write_idx(path: Path, array: np.ndarray) -> None:
    """The idx format of the MNIST files: 0, 0, 0x08 (ubyte), ndim, then big-endian dims."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist(root: Path, folder: str) -> None:
    """3 train and 2 test images per digit; every pixel of an image is 25 * its label."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for split, per_class in (("train", 3), ("t10k", 2)):
        labels = np.tile(np.arange(10, dtype=np.uint8), per_class)
        images = np.broadcast_to((labels * 25)[:, None, None], (len(labels), 28, 28))
        _write_idx(raw / f"{split}-images-idx3-ubyte", images)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", labels)


def _save(path: Path, image: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _write_folder(root: Path, counts: dict[str, int], size: tuple[int, int] = (12, 10)) -> None:
    """One folder per class; the red channel encodes the class index (40 * index)."""
    for index, (name, count) in enumerate(counts.items()):
        for i in range(count):
            colour = (40 * index, 10 * i, 200)
            sub = "nested/" if i % 2 else ""  # images may sit deeper inside the class folder
            _save(root / name / f"{sub}{i}.png", Image.new("RGB", size, colour))


def _red_label(images: torch.Tensor, step: int) -> torch.Tensor:
    """The label a fixture encoded into the red channel."""
    return (images[:, 0, 0, 0].long() + step // 2) // step


# --- digits, split, determinism ----------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> PreparedData:
    return prepare_data(DataConfig(source="digits", image_size=16))


def test_digits_shapes_dtypes_and_classes(digits: PreparedData) -> None:
    assert digits.class_names == tuple(str(i) for i in range(10))
    assert digits.num_classes == 10
    assert len(digits.train_labels) + len(digits.val_labels) == 1797
    assert digits.train_images.shape == (len(digits.train_labels), 3, 16, 16)
    assert digits.val_images.shape == (len(digits.val_labels), 3, 16, 16)
    assert digits.train_images.dtype == torch.uint8 and digits.train_labels.dtype == torch.int64
    assert digits.train_images.is_contiguous() and digits.train_images.device.type == "cpu"
    assert digits.train_images.max().item() == 255 and digits.train_images.min().item() == 0
    # greyscale fed as three identical channels
    assert torch.equal(digits.train_images[:, 0], digits.train_images[:, 2])
    assert abs(len(digits.val_labels) / 1797 - 0.2) < 0.01
    assert digits.skipped_files == ()


def test_holdout_is_stratified(digits: PreparedData) -> None:
    train_counts = torch.bincount(digits.train_labels, minlength=10).float()
    val_counts = torch.bincount(digits.val_labels, minlength=10).float()
    assert bool((val_counts > 0).all())
    assert torch.allclose(
        val_counts / (train_counts + val_counts), torch.full((10,), 0.2), atol=0.01
    )


def test_split_is_deterministic_and_depends_on_the_seed(digits: PreparedData) -> None:
    again = prepare_data(DataConfig(source="digits", image_size=16))
    assert torch.equal(again.val_images, digits.val_images)
    assert torch.equal(again.train_labels, digits.train_labels)
    assert again.fingerprint == digits.fingerprint and len(digits.fingerprint) == 64

    other = prepare_data(DataConfig(source="digits", image_size=16, split_seed=1))
    assert other.fingerprint != digits.fingerprint
    assert not torch.equal(other.val_images, digits.val_images)


def test_split_is_the_same_in_another_process(digits: PreparedData) -> None:
    code = (
        "from tuner.config import DataConfig; from tuner.data import prepare_data; "
        "print(prepare_data(DataConfig(source='digits', image_size=16)).fingerprint)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == digits.fingerprint


def test_digits_has_no_test_split() -> None:
    with pytest.raises(TunerError, match=r"data\.val_source"):
        prepare_data(DataConfig(source="digits", val_source="test"))


def test_class_weights_are_inverse_frequencies() -> None:
    labels = torch.tensor([0, 0, 0, 1, 2, 2])
    images = torch.zeros((6, 3, 4, 4), dtype=torch.uint8)
    data = PreparedData(images, labels, images, labels, ("a", "b", "c"), "x")
    weights = data.class_weights()
    assert weights.dtype == torch.float32
    # N / (C * n_c) = 6 / (3 * [3, 1, 2])
    assert torch.allclose(weights, torch.tensor([2 / 3, 2.0, 1.0]))


# --- torchvision sources --------------------------------------------------------------------


def test_cifar10_holdout_reads_the_real_format(cifar_root: Path) -> None:
    data = prepare_data(DataConfig(source="cifar10", root=str(cifar_root), val_fraction=0.2))
    assert data.class_names == CIFAR_NAMES
    assert len(data.train_labels) == 80 and len(data.val_labels) == 20  # 2 of 10 per class
    assert torch.equal(_red_label(data.train_images, 20), data.train_labels)
    assert torch.equal(_red_label(data.val_images, 20), data.val_labels)
    assert data.val_images[:, 2, 0, 0].eq(255).all() and data.val_images[:, 2, -1, 0].eq(0).all()
    ids = torch.cat([data.train_images[:, 1, 0, 0], data.val_images[:, 1, 0, 0]])
    assert sorted(ids.tolist()) == list(range(100))  # every train image exactly once


def test_cifar10_classes_subset_cap_and_test_split(cifar_root: Path) -> None:
    cfg = DataConfig(
        source="cifar10",
        root=str(cifar_root),
        classes=("cat", "airplane", "truck"),
        per_class=4,
        val_source="test",
    )
    data = prepare_data(cfg)
    assert data.class_names == ("cat", "airplane", "truck")  # the given order sets the labels
    assert torch.bincount(data.train_labels).tolist() == [4, 4, 4]
    assert torch.bincount(data.val_labels).tolist() == [5, 5, 5]  # the whole test split
    original = torch.tensor([CIFAR_NAMES.index(n) for n in data.class_names])
    assert torch.equal(_red_label(data.train_images, 20), original[data.train_labels])
    assert torch.equal(_red_label(data.val_images, 20), original[data.val_labels])
    assert bool((data.val_images[:, 1, 0, 0] >= 100).all())  # ids 100+ are the test batch


def test_cifar10_relabel_caps_each_new_class(cifar_root: Path) -> None:
    cfg = DataConfig(
        source="cifar10",
        root=str(cifar_root),
        classes=("cat", "dog", "automobile", "truck"),
        relabel=(("animal", ("cat", "dog")), ("vehicle", ("automobile", "truck"))),
        per_class=12,
        val_source="test",
    )
    data = prepare_data(cfg)
    assert data.class_names == ("animal", "vehicle")
    assert torch.bincount(data.train_labels).tolist() == [12, 12]  # 12 of 20 per new class
    assert torch.bincount(data.val_labels).tolist() == [10, 10]
    old = _red_label(data.train_images, 20)
    is_vehicle = (old == CIFAR_NAMES.index("automobile")) | (old == CIFAR_NAMES.index("truck"))
    assert torch.equal(is_vehicle.long(), data.train_labels)
    # a seeded sample, not the first 12 of each class; the same again for the same seed
    kept_ids = sorted(data.train_images[data.train_labels == 0, 1, 0, 0].tolist())
    first_ids = sorted(i for i in range(100) if i % 10 in (3, 5))[:12]
    assert kept_ids != first_ids
    assert torch.equal(prepare_data(cfg).train_images, data.train_images)


def test_per_class_caps_the_pool_before_a_holdout(cifar_root: Path) -> None:
    cfg = DataConfig(source="cifar10", root=str(cifar_root), per_class=5, val_fraction=0.2)
    data = prepare_data(cfg)
    assert torch.bincount(data.train_labels).tolist() == [4] * 10
    assert torch.bincount(data.val_labels).tolist() == [1] * 10


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"classes": ("cat", "unicorn")},
            "data.classes: no class named 'unicorn'; available: airplane",
        ),
        ({"classes": ("cat", "dog"), "relabel": (("pets", ("cat",)),)}, "data.relabel: dog"),
        ({"classes": ("cat", "dog"), "relabel": (("x", ("cat", "dog", "ship")),)}, "'ship'"),
        ({"relabel": (("a", ("cat",)), ("b", ("cat",)))}, "data.relabel: 'cat' goes to both"),
        ({"classes": ("cat",)}, "at least 2"),
    ],
)
def test_bad_class_selection_is_a_tuner_error(
    cifar_root: Path, changes: dict, message: str
) -> None:
    with pytest.raises(TunerError, match=message):
        prepare_data(DataConfig(source="cifar10", root=str(cifar_root), **changes))


def test_missing_cifar_files_name_the_root(tmp_path: Path) -> None:
    with pytest.raises(TunerError) as error:
        prepare_data(DataConfig(source="cifar10", root=str(tmp_path / "nowhere")))
    text = str(error.value)
    assert text.startswith("data.root: CIFAR-10 files not found under")
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in text
    assert "data.download: true" in text


def test_cifar_files_failing_the_checksum_are_reported_as_corrupted(tmp_path: Path) -> None:
    _write_cifar10(tmp_path)  # the fixture files, without the checksum patch: md5s differ
    with pytest.raises(TunerError, match="corrupted") as error:
        prepare_data(DataConfig(source="cifar10", root=str(tmp_path)))
    assert str(tmp_path / "cifar-10-batches-py") in str(error.value)


@pytest.mark.parametrize(
    ("source", "folder", "first"),
    [("mnist", "MNIST", "0 - zero"), ("fashionmnist", "FashionMNIST", "T-shirt/top")],
)
def test_mnist_idx_files_with_the_test_split(
    tmp_path: Path, source: str, folder: str, first: str
) -> None:
    _write_mnist(tmp_path, folder)
    data = prepare_data(DataConfig(source=source, root=str(tmp_path), val_source="test"))
    assert data.class_names[0] == first and data.num_classes == 10
    assert data.train_images.shape == (30, 3, 32, 32) and data.val_images.shape == (20, 3, 32, 32)
    assert torch.equal(_red_label(data.train_images, 25), data.train_labels)
    assert torch.equal(data.val_images[:, 0], data.val_images[:, 1])  # greyscale -> 3 channels


def test_missing_mnist_files_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(TunerError, match="MNIST files not found") as error:
        prepare_data(DataConfig(source="mnist", root=str(tmp_path)))
    assert str(tmp_path / "MNIST" / "raw") in str(error.value)


# --- folder source --------------------------------------------------------------------------


def test_folder_single_tree_is_split_stratified(tmp_path: Path) -> None:
    _write_folder(tmp_path, {"ant": 6, "bee": 5, "cow": 2})
    data = prepare_data(
        DataConfig(source="folder", path=str(tmp_path), image_size=8, val_fraction=0.2)
    )
    assert data.class_names == ("ant", "bee", "cow")
    assert torch.bincount(data.val_labels).tolist() == [1, 1, 1]  # cow: 2 images -> 1 in val
    assert torch.bincount(data.train_labels).tolist() == [5, 4, 1]
    assert data.train_images.shape == (10, 3, 8, 8)
    assert torch.equal(_red_label(data.train_images, 40), data.train_labels)


def test_folder_train_and_val_subfolders_are_the_split(tmp_path: Path) -> None:
    _write_folder(tmp_path / "train", {"ant": 3, "bee": 4})
    _write_folder(tmp_path / "val", {"ant": 2, "bee": 1}, size=(30, 20))
    data = prepare_data(DataConfig(source="folder", path=str(tmp_path), image_size=8))
    assert torch.bincount(data.train_labels).tolist() == [3, 4]
    assert torch.bincount(data.val_labels).tolist() == [2, 1]
    assert torch.equal(_red_label(data.val_images, 40), data.val_labels)


def test_folder_val_class_missing_from_train_is_an_error(tmp_path: Path) -> None:
    _write_folder(tmp_path / "train", {"ant": 3, "bee": 3})
    _write_folder(tmp_path / "val", {"ant": 1, "bee": 1, "cow": 1})
    with pytest.raises(TunerError, match="cow only in one of them"):
        prepare_data(DataConfig(source="folder", path=str(tmp_path)))


def test_corrupt_files_are_listed_together(tmp_path: Path) -> None:
    _write_folder(tmp_path, {"ant": 3, "bee": 3})
    broken = [tmp_path / "ant" / "broken.png", tmp_path / "bee" / "notes.jpg"]
    broken[0].write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    broken[1].write_text("not an image")
    with pytest.raises(TunerError) as error:
        prepare_data(DataConfig(source="folder", path=str(tmp_path)))
    text = str(error.value)
    assert "2 image file(s) could not be read" in text and "data.skip_bad_images: true" in text
    assert all(str(path) in text for path in broken)


def test_many_corrupt_files_are_summarised(tmp_path: Path) -> None:
    _write_folder(tmp_path, {"ant": 2, "bee": 2})
    for i in range(25):
        (tmp_path / "ant" / f"bad{i:02}.png").write_bytes(b"junk")
    with pytest.raises(TunerError, match="and 5 more") as error:
        prepare_data(DataConfig(source="folder", path=str(tmp_path)))
    assert str(error.value).count("/ant/bad") == 20


def test_skip_bad_images_records_them(tmp_path: Path) -> None:
    _write_folder(tmp_path, {"ant": 3, "bee": 3})
    broken = tmp_path / "bee" / "truncated.png"
    good = (tmp_path / "bee" / "0.png").read_bytes()
    broken.write_bytes(good[: len(good) // 2])
    data = prepare_data(DataConfig(source="folder", path=str(tmp_path), skip_bad_images=True))
    assert data.skipped_files == (str(broken),)
    assert len(data.train_labels) + len(data.val_labels) == 6


def test_folder_classes_subset_skips_decoding_dropped_classes(tmp_path: Path) -> None:
    _write_folder(tmp_path, {"ant": 3, "bee": 3, "cow": 3})
    (tmp_path / "cow" / "broken.png").write_bytes(b"junk")  # in a dropped class: never read
    data = prepare_data(DataConfig(source="folder", path=str(tmp_path), classes=("bee", "ant")))
    assert data.class_names == ("bee", "ant")
    assert torch.equal(_red_label(data.train_images, 40), 1 - data.train_labels)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "does not exist"),
        ("file", "is not a directory"),
        ("no_classes", "no class folders in"),
        ("empty_class", "has no images"),
        ("one_class", "at least 2"),
        ("train_only", "only one of train/ and val/"),
    ],
)
def test_unusable_folders_are_tuner_errors(tmp_path: Path, layout: str, message: str) -> None:
    path = tmp_path / "data"
    if layout == "file":
        path.write_text("x")
    elif layout == "no_classes":
        _save(path / "loose.png", Image.new("RGB", (4, 4)))
    elif layout == "empty_class":
        _write_folder(path, {"ant": 2})
        (path / "bee").mkdir()
        (path / "bee" / "readme.txt").write_text("no images")
    elif layout == "one_class":
        _write_folder(path, {"ant": 4})
    elif layout == "train_only":
        _write_folder(path / "train", {"ant": 2, "bee": 2})
    with pytest.raises(TunerError, match=message) as error:
        prepare_data(DataConfig(source="folder", path=str(path)))
    if layout != "one_class":
        assert str(path) in str(error.value)


# --- decoding and resizing ------------------------------------------------------------------


def test_image_modes_decode_to_rgb(tmp_path: Path) -> None:
    grey = _save(tmp_path / "grey.png", Image.new("L", (3, 2), 77))
    assert load_image_file(grey).tolist() == torch.full((3, 2, 3), 77).tolist()

    rgba = Image.new("RGBA", (2, 1), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 255, 0, 0))  # fully transparent green -> the white background
    assert torch.equal(pil_to_tensor(rgba), torch.tensor([[255, 255], [0, 255], [0, 255]])[:, None])
    assert load_image_file(_save(tmp_path / "rgba.png", rgba))[:, 0].T.tolist() == [
        [255, 0, 0],
        [255, 255, 255],
    ]

    la = Image.new("LA", (1, 1), (0, 128))  # half-transparent black over white
    assert load_image_file(_save(tmp_path / "la.png", la)).flatten().tolist() == [127, 127, 127]

    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 1
    assert load_image_file(_save(tmp_path / "p.png", palette))[:, 0].T.tolist() == [
        [255, 0, 0],
        [255, 255, 255],
    ]

    cmyk = Image.new("CMYK", (1, 1), (0, 255, 255, 0))  # pure red in print colours
    assert load_image_file(_save(tmp_path / "cmyk.tif", cmyk)).flatten().tolist() == [255, 0, 0]


@pytest.mark.parametrize("name", ["deep.png", "deep.tif"])
def test_16_bit_images_are_scaled_not_clipped(tmp_path: Path, name: str) -> None:
    values = np.array([[0, 257 * 100, 32896, 65535]], dtype=np.uint16)
    image = (
        Image.fromarray(values)
        if name.endswith("png")
        else Image.fromarray(values.astype(np.int32))
    )
    path = _save(tmp_path / name, image)
    assert Image.open(path).mode in ("I;16", "I")
    decoded = load_image_file(path)
    assert decoded.shape == (3, 1, 4) and decoded.dtype == torch.uint8
    assert decoded[0, 0].tolist() == [0, 100, 128, 255]


def test_unreadable_file_names_its_path(tmp_path: Path) -> None:
    path = tmp_path / "fake.jpg"
    path.write_bytes(b"GIF89a nonsense")
    with pytest.raises(TunerError, match=r"fake\.jpg"):
        load_image_file(path)
    with pytest.raises(TunerError, match=r"missing\.png"):
        load_image_file(tmp_path / "missing.png")


def test_fit_square_crops_the_centre_and_replicates_grey() -> None:
    wide = torch.zeros((1, 20, 40), dtype=torch.uint8)
    wide[:, :, 10:30] = 100  # the middle half; the outer quarters are cropped away
    out = fit_square(wide, 20)
    assert out.shape == (3, 20, 20) and out.dtype == torch.uint8
    assert bool(out.eq(100).all())

    batch = torch.randint(0, 256, (5, 3, 48, 64), dtype=torch.uint8)
    resized = fit_square(batch, 24)
    assert resized.shape == (5, 3, 24, 24) and resized.is_contiguous()
    one_by_one = torch.stack([fit_square(image, 24) for image in batch])
    assert torch.equal(resized, one_by_one)  # batch-wise == per file (train vs predict)
