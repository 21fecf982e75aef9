"""Reading each source: digits, CIFAR/MNIST files in their on-disk formats, folders.

The torchvision datasets are written by the tests in the exact formats torchvision reads
(CIFAR pickles, MNIST idx files) and then read by the real torchvision classes; nothing
is downloaded.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import CIFAR_NAMES, red_label, save_image, write_cifar10
from tuner.config import DATA_SOURCES, DataConfig
from tuner.data.prepare import PreparedData, prepare_data
from tuner.data.sources import source_files
from tuner.errors import TunerError

# --- fixtures: datasets in their real on-disk formats ---------------------------------------


def _write_idx(path: Path, array: np.ndarray) -> None:
    """The idx format of the MNIST files: 0, 0, 0x08 (ubyte), ndim, then big-endian dims."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist(root: Path, folder: str, originals: bool = False) -> None:
    """3 train and 2 test images per digit; every pixel of an image is 25 * its label.

    In torchvision's layout (``folder``/raw, uncompressed), or as the authors publish the files
    and Debian installs them (``originals``: gzipped, in ``root`` itself).
    """
    raw = root if originals else root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, per_class in (("train", 3), ("t10k", 2)):
        labels = np.tile(np.arange(10, dtype=np.uint8), per_class)
        images = np.broadcast_to((labels * 25)[:, None, None], (len(labels), 28, 28))
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            path = raw / f"{split}-{kind}-ubyte"
            _write_idx(path, array)
            if originals:
                path.with_name(f"{path.name}.gz").write_bytes(gzip.compress(path.read_bytes()))
                path.unlink()


def _write_folder(root: Path, counts: dict[str, int], size: tuple[int, int] = (12, 10)) -> None:
    """One folder per class; the red channel encodes the class index (40 * index)."""
    for index, (name, count) in enumerate(counts.items()):
        for i in range(count):
            colour = (40 * index, 10 * i, 200)
            sub = "nested/" if i % 2 else ""  # images may sit deeper inside the class folder
            save_image(root / name / f"{sub}{i}.png", Image.new("RGB", size, colour))


# --- digits --------------------------------------------------------------------------------


def test_digits_shapes_dtypes_and_classes(digits: PreparedData) -> None:
    assert digits.class_names == tuple(str(i) for i in range(10))
    assert digits.num_classes == 10
    sizes = [len(digits.train_labels), len(digits.val_labels), len(digits.test_labels)]
    assert sum(sizes) == 1797 and sizes[2] == digits.test_count
    assert digits.train_images.shape == (len(digits.train_labels), 3, 16, 16)
    assert digits.val_images.shape == (len(digits.val_labels), 3, 16, 16)
    assert digits.train_images.dtype == torch.uint8 and digits.train_labels.dtype == torch.int64
    assert digits.train_images.is_contiguous() and digits.train_images.device.type == "cpu"
    assert digits.train_images.max().item() == 255 and digits.train_images.min().item() == 0
    # greyscale fed as three identical channels
    assert torch.equal(digits.train_images[:, 0], digits.train_images[:, 2])
    assert abs(len(digits.val_labels) / 1797 - 0.2) < 0.01  # val_fraction of the whole
    assert abs(len(digits.test_labels) / 1797 - 0.2) < 0.01  # test_fraction likewise
    assert digits.test_split == "a stratified holdout"
    assert digits.skipped_files == ()


def test_digits_has_no_test_split() -> None:
    with pytest.raises(TunerError, match=r"data\.val_source"):
        prepare_data(DataConfig(source="digits", val_source="test"))


# --- torchvision sources --------------------------------------------------------------------


def test_cifar10_holdout_reads_the_real_format(cifar_root: Path) -> None:
    data = prepare_data(DataConfig(source="cifar10", root=str(cifar_root), val_fraction=0.2))
    assert data.class_names == CIFAR_NAMES
    assert len(data.train_labels) == 80 and len(data.val_labels) == 20  # 2 of 10 per class
    assert torch.equal(red_label(data.train_images, 20), data.train_labels)
    assert torch.equal(red_label(data.val_images, 20), data.val_labels)
    assert data.val_images[:, 2, 0, 0].eq(255).all() and data.val_images[:, 2, -1, 0].eq(0).all()
    ids = torch.cat([data.train_images[:, 1, 0, 0], data.val_images[:, 1, 0, 0]])
    assert sorted(ids.tolist()) == list(range(100))  # every train image exactly once
    assert data.test_images is None and data.test_count == 50  # not mapped unless asked for


def test_missing_cifar_files_name_the_root(tmp_path: Path) -> None:
    with pytest.raises(TunerError) as error:
        prepare_data(DataConfig(source="cifar10", root=str(tmp_path / "nowhere")))
    text = str(error.value)
    assert text.startswith("data.root: CIFAR-10 files not found under")
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in text
    assert "data.download: true" in text


def test_cifar_files_failing_the_checksum_are_reported_as_corrupted(tmp_path: Path) -> None:
    write_cifar10(tmp_path)  # the fixture files, without the checksum patch: md5s differ
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
    assert data.train_images.shape == (20, 3, 32, 32) and data.val_images.shape == (20, 3, 32, 32)
    # validation takes the test split, so the test images are a holdout of training: 1 of 3
    assert (data.test_count, data.test_split) == (10, "a stratified holdout")
    assert torch.equal(red_label(data.train_images, 25), data.train_labels)
    assert torch.equal(data.val_images[:, 0], data.val_images[:, 1])  # greyscale -> 3 channels


def test_missing_mnist_files_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(TunerError, match="MNIST files not found") as error:
        prepare_data(DataConfig(source="mnist", root=str(tmp_path)))
    assert str(tmp_path / "MNIST" / "raw") in str(error.value)


@pytest.mark.parametrize("source", ["mnist", "fashionmnist"])
def test_the_original_gz_files_in_data_root_are_read(tmp_path: Path, source: str) -> None:
    _write_mnist(tmp_path / "flat", "", originals=True)
    cfg = DataConfig(source=source, root=str(tmp_path / "flat"), image_size=28)
    data = prepare_data(cfg, tmp_path / "cache", with_test=True)
    assert data.num_classes == 10 and len(data.train_labels) + len(data.val_labels) == 30
    assert (data.test_count, data.test_split) == (20, "the source's own test split")
    assert torch.equal(red_label(data.test_images, 25), data.test_labels)
    assert torch.equal(red_label(data.train_images, 25), data.train_labels)
    assert source_files(cfg) == [tmp_path / "flat" / n for n in DATA_SOURCES[source].originals]


def test_torchvision_s_layout_wins_over_the_originals(tmp_path: Path) -> None:
    _write_mnist(tmp_path, "MNIST")
    _write_mnist(tmp_path, "", originals=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")  # would fail if read
    data = prepare_data(DataConfig(source="mnist", root=str(tmp_path)), with_test=True)
    assert data.test_count == 20


def test_a_damaged_original_file_is_named(tmp_path: Path) -> None:
    _write_mnist(tmp_path, "", originals=True)
    broken = tmp_path / "train-images-idx3-ubyte.gz"
    broken.write_bytes(gzip.compress(gzip.decompress(broken.read_bytes())[:-5]))
    with pytest.raises(TunerError, match="is truncated") as error:
        prepare_data(DataConfig(source="fashionmnist", root=str(tmp_path)))
    assert str(broken) in str(error.value)


def test_missing_fashion_mnist_names_both_ways_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(TunerError, match="Fashion-MNIST files not found") as error:
        prepare_data(DataConfig(source="fashionmnist", root=str(tmp_path)))
    message = str(error.value)
    assert str(tmp_path / "FashionMNIST" / "raw") in message
    assert (
        "train-images-idx3-ubyte.gz" in message
        and "apt-get install dataset-fashion-mnist" in message
    )
    assert "data.download: true" in message


def test_debian_s_fashion_mnist_files(debian_fashion_mnist: Path, tmp_path: Path) -> None:
    """The real files of Debian's dataset-fashion-mnist: 60,000 training photos, 6,000 per
    class, and the official test split of 1,000 per class."""
    cfg = DataConfig(source="fashionmnist", root=str(debian_fashion_mnist), per_class=20)
    data = prepare_data(cfg, tmp_path / "cache", with_test=True)
    assert data.class_names == ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")  # fmt: skip
    assert len(data.train_labels) + len(data.val_labels) == 200
    assert data.test_count == 10_000
    assert torch.bincount(data.test_labels).tolist() == [1000] * 10
    assert data.train_images.shape[1:] == (3, 32, 32) and data.train_images.float().std() > 20


def test_a_torchvision_source_is_one_record_in_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Kuzushiji-MNIST, added the way a new source is: one record, nothing else
    kmnist = dataclasses.replace(
        DATA_SOURCES["mnist"],
        name="kmnist",
        title="Kuzushiji-MNIST",
        torchvision_class="KMNIST",
        folder="KMNIST/raw",
    )
    monkeypatch.setitem(DATA_SOURCES, "kmnist", kmnist)
    _write_mnist(tmp_path / "data", "KMNIST")
    cfg = DataConfig(source="kmnist", root=str(tmp_path / "data"), image_size=28)
    cache = tmp_path / "cache"
    data = prepare_data(cfg, cache, with_test=True)
    assert data.class_names[:3] == ("o", "ki", "su") and data.num_classes == 10
    assert (data.test_count, data.test_split) == (20, "the source's own test split")
    assert torch.equal(red_label(data.test_images, 25), data.test_labels)
    raw = tmp_path / "data" / "KMNIST" / "raw"
    assert source_files(cfg) == sorted(raw / name for name in kmnist.files)  # the cache key's
    assert prepare_data(cfg, cache).fingerprint == data.fingerprint
    assert len(list(cache.iterdir())) == 1  # the same files: the entry built above
    os.utime(raw / kmnist.files[0], ns=(1_000_000_000, 1_000_000_000))
    prepare_data(cfg, cache)
    assert len(list(cache.iterdir())) == 2  # a changed file is a new entry
    with pytest.raises(TunerError, match="Kuzushiji-MNIST files not found") as error:
        prepare_data(DataConfig(source="kmnist", root=str(tmp_path / "nowhere")))
    assert str(tmp_path / "nowhere" / "KMNIST" / "raw") in str(error.value)


def test_an_unknown_source_lists_the_table(tmp_path: Path) -> None:
    with pytest.raises(TunerError, match=r"data\.source: unknown 'kmnist'; use one of digits,"):
        prepare_data(DataConfig(source="kmnist"), tmp_path / "cache")


# --- folder source --------------------------------------------------------------------------


def test_folder_single_tree_is_split_stratified(tmp_path: Path) -> None:
    _write_folder(tmp_path, {"ant": 6, "bee": 5, "cow": 2})
    data = prepare_data(
        DataConfig(
            source="folder", path=str(tmp_path), image_size=8, val_fraction=0.2, test_source="none"
        )
    )
    assert data.class_names == ("ant", "bee", "cow")
    assert torch.bincount(data.val_labels).tolist() == [1, 1, 1]  # cow: 2 images -> 1 in val
    assert torch.bincount(data.train_labels).tolist() == [5, 4, 1]
    assert data.train_images.shape == (10, 3, 8, 8)
    assert torch.equal(red_label(data.train_images, 40), data.train_labels)


def test_folder_train_and_val_subfolders_are_the_split(tmp_path: Path) -> None:
    _write_folder(tmp_path / "train", {"ant": 3, "bee": 4})
    _write_folder(tmp_path / "val", {"ant": 2, "bee": 1}, size=(30, 20))
    config = DataConfig(source="folder", path=str(tmp_path), image_size=8, test_source="none")
    data = prepare_data(config)
    assert torch.bincount(data.train_labels).tolist() == [3, 4]
    assert torch.bincount(data.val_labels).tolist() == [2, 1]
    assert torch.equal(red_label(data.val_images, 40), data.val_labels)


@pytest.mark.parametrize("with_val", [True, False])
def test_a_test_subfolder_is_the_test_split(tmp_path: Path, with_val: bool) -> None:
    _write_folder(tmp_path / "train", {"ant": 5, "bee": 5})
    _write_folder(tmp_path / "test", {"ant": 2, "bee": 3}, size=(30, 20))
    if with_val:
        _write_folder(tmp_path / "val", {"ant": 1, "bee": 1})
    config = DataConfig(source="folder", path=str(tmp_path), image_size=8)
    data = prepare_data(config, with_test=True)
    assert torch.bincount(data.test_labels).tolist() == [2, 3]
    assert data.test_split == "the source's own test split"
    assert torch.equal(red_label(data.test_images, 40), data.test_labels)
    expected_val = [1, 1]  # val/, or one held out of each class's 5 training images
    assert torch.bincount(data.val_labels).tolist() == expected_val
    assert torch.bincount(data.train_labels).tolist() == ([5, 5] if with_val else [4, 4])


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
    _write_folder(tmp_path, {"ant": 3, "bee": 3})
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
    assert len(data.train_labels) + len(data.val_labels) + data.test_count == 6


def test_folder_classes_subset_skips_decoding_dropped_classes(tmp_path: Path) -> None:
    _write_folder(tmp_path, {"ant": 3, "bee": 3, "cow": 3})
    (tmp_path / "cow" / "broken.png").write_bytes(b"junk")  # in a dropped class: never read
    data = prepare_data(DataConfig(source="folder", path=str(tmp_path), classes=("bee", "ant")))
    assert data.class_names == ("bee", "ant")
    assert torch.equal(red_label(data.train_images, 40), 1 - data.train_labels)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "does not exist"),
        ("file", "is not a directory"),
        ("no_classes", "no class folders in"),
        ("empty_class", "has no images"),
        ("one_class", "at least 2"),
        ("train_only", "has train/ but no val/ or test/"),
    ],
)
def test_unusable_folders_are_tuner_errors(tmp_path: Path, layout: str, message: str) -> None:
    path = tmp_path / "data"
    if layout == "file":
        path.write_text("x")
    elif layout == "no_classes":
        save_image(path / "loose.png", Image.new("RGB", (4, 4)))
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
