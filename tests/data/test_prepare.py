"""prepare_data after loading: subsets, relabel, per-class caps, the split, class weights.

The CIFAR-10 fixture (tests/conftest.py) is written in the real on-disk format and read
by the real torchvision class; nothing is downloaded.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import CIFAR_NAMES, red_label
from tuner.config import DataConfig, from_stored, load_config, to_dict
from tuner.data.prepare import PreparedData, prepare_data
from tuner.errors import TunerError

# --- digits: split, determinism, class weights ---------------------------------------------


def test_holdout_is_stratified(digits: PreparedData) -> None:
    counts = [
        torch.bincount(labels, minlength=10).float()
        for labels in (digits.train_labels, digits.val_labels, digits.test_labels)
    ]
    assert all(bool((side > 0).all()) for side in counts)
    for held in counts[1:]:  # val and test: 20% of each class each
        assert torch.allclose(held / sum(counts), torch.full((10,), 0.2), atol=0.01)


def test_without_a_test_split_the_data_is_what_it_was_before_test_splits(
    digits: PreparedData,
) -> None:
    """Studies made before held-out test splits existed store no data.test_source; read back
    as "none", their data and its fingerprint must be exactly what they pinned."""
    old = prepare_data(DataConfig(source="digits", test_source="none"))
    assert old.fingerprint.startswith("3b261c1f")  # the default study's, before this change
    assert (len(old.train_labels), len(old.val_labels), old.test_count) == (1438, 359, 0)
    assert load_config(None, []).data.test_source == "auto"  # new studies hold out a test split
    stored = to_dict(load_config(None, []))
    del stored["data"]["test_source"]
    assert from_stored(stored).data.test_source == "none"


def test_the_test_split_is_disjoint_from_train_and_val(cifar_root: Path) -> None:
    """The green channel of the fixture's images is a per-image id: 0..99 train, 100..149 test."""

    def ids(images: torch.Tensor) -> set[int]:
        return set(images[:, 1, 0, 0].tolist())

    own = prepare_data(DataConfig(source="cifar10", root=str(cifar_root)), with_test=True)
    assert ids(own.test_images) == set(range(100, 150))  # the dataset's test batch, whole
    assert ids(own.train_images) | ids(own.val_images) == set(range(100))

    cfg = DataConfig(source="cifar10", root=str(cifar_root), test_source="holdout")
    held = prepare_data(cfg, with_test=True)
    sides = [ids(held.train_images), ids(held.val_images), ids(held.test_images)]
    assert [len(side) for side in sides] == [60, 20, 20]
    assert set.union(*sides) == set(range(100))  # disjoint, and together the training pool
    assert torch.bincount(held.test_labels).tolist() == [2] * 10
    assert torch.equal(red_label(held.test_images, 20), held.test_labels)
    assert held.fingerprint != own.fingerprint  # the test split is part of the fingerprint


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
        "from tuner.config import DataConfig; from tuner.data.prepare import prepare_data; "
        "print(prepare_data(DataConfig(source='digits', image_size=16)).fingerprint)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == digits.fingerprint


def test_class_weights_are_inverse_frequencies() -> None:
    labels = torch.tensor([0, 0, 0, 1, 2, 2])
    images = torch.zeros((6, 3, 4, 4), dtype=torch.uint8)
    data = PreparedData(images, labels, images, labels, ("a", "b", "c"), "x")
    weights = data.class_weights()
    assert weights.dtype == torch.float32
    # N / (C * n_c) = 6 / (3 * [3, 1, 2])
    assert torch.allclose(weights, torch.tensor([2 / 3, 2.0, 1.0]))


# --- CIFAR-10: subsets, relabel, per-class cap, class checks -------------------------------


def test_cifar10_classes_subset_cap_and_test_split(cifar_root: Path) -> None:
    cfg = DataConfig(
        source="cifar10",
        root=str(cifar_root),
        classes=("cat", "airplane", "truck"),
        per_class=5,
        val_source="test",
    )
    data = prepare_data(cfg, with_test=True)
    assert data.class_names == ("cat", "airplane", "truck")  # the given order sets the labels
    # validation takes the test split, so the test images are held out of the 5 kept
    assert torch.bincount(data.train_labels).tolist() == [4, 4, 4]
    assert torch.bincount(data.test_labels).tolist() == [1, 1, 1]
    assert bool((data.test_images[:, 1, 0, 0] < 100).all())
    assert torch.bincount(data.val_labels).tolist() == [5, 5, 5]  # the whole test split
    original = torch.tensor([CIFAR_NAMES.index(n) for n in data.class_names])
    assert torch.equal(red_label(data.train_images, 20), original[data.train_labels])
    assert torch.equal(red_label(data.val_images, 20), original[data.val_labels])
    assert bool((data.val_images[:, 1, 0, 0] >= 100).all())  # ids 100+ are the test batch


def test_cifar10_relabel_caps_each_new_class(cifar_root: Path) -> None:
    cfg = DataConfig(
        source="cifar10",
        root=str(cifar_root),
        classes=("cat", "dog", "automobile", "truck"),
        relabel=(("animal", ("cat", "dog")), ("vehicle", ("automobile", "truck"))),
        per_class=12,
        val_source="test",
        test_source="none",
    )
    data = prepare_data(cfg)
    assert data.class_names == ("animal", "vehicle")
    assert torch.bincount(data.train_labels).tolist() == [12, 12]  # 12 of 20 per new class
    assert torch.bincount(data.val_labels).tolist() == [10, 10]
    old = red_label(data.train_images, 20)
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
