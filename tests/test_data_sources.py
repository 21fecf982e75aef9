"""The data-source table (tuner.config.DATA_SOURCES) and every place derived from it.

Each record names a loader kind that the data layer implements, a torchvision record names a
real torchvision class and the folder and files that class reads, and the config's rules
(``data.source``'s choices, ``data.path``, ``data.val_source: test``, the digits holdout) come
from the record, not from a list of names.
"""

from __future__ import annotations

import dataclasses
import os

import pytest
import torchvision.datasets

from tuner.config import (
    DATA_SOURCES,
    LOADERS,
    TEST_SPLITS,
    DataConfig,
    SourceInfo,
    from_dict,
)
from tuner.data.sources import READERS
from tuner.errors import TunerError

TORCHVISION = [info for info in DATA_SOURCES.values() if info.loader == "torchvision"]


def test_every_loader_kind_has_exactly_one_reader() -> None:
    assert set(READERS) == set(LOADERS)
    for name, info in DATA_SOURCES.items():
        assert isinstance(info, SourceInfo) and info.name == name
        assert info.loader in LOADERS and info.test_split in TEST_SPLITS, name
        assert info.title and info.describe("data", "/images"), name
        assert (info.torchvision_class is not None) == (info.loader == "torchvision"), name


def _layout_of(cls: type) -> tuple[str, tuple[str, ...]]:
    """(folder under the root, files) that a torchvision class reads: MNIST-like classes read
    the unpacked ``resources`` in ``<ClassName>/raw``, CIFAR-like ones their lists and meta."""
    if hasattr(cls, "resources"):
        names = (os.path.basename(url).removesuffix(".gz") for url, _ in cls.resources)
        return f"{cls.__name__}/raw", tuple(names)
    files = (name for name, _ in (*cls.train_list, *cls.test_list))
    return cls.base_folder, (*files, cls.meta["filename"])


@pytest.mark.parametrize("info", TORCHVISION, ids=[info.name for info in TORCHVISION])
def test_torchvision_records_name_what_the_class_reads(info: SourceInfo) -> None:
    cls = getattr(torchvision.datasets, info.torchvision_class)
    folder, files = _layout_of(cls)
    assert info.folder == folder
    assert sorted(info.files) == sorted(files)
    assert info.test_split == "always"  # every torchvision dataset here has train=False


def test_the_config_takes_exactly_the_table_s_names() -> None:
    rule = dataclasses.fields(DataConfig)[0].metadata["rule"]
    assert rule.choices == tuple(DATA_SOURCES)


@pytest.mark.parametrize("info", DATA_SOURCES.values(), ids=list(DATA_SOURCES))
def test_cross_key_rules_follow_the_record(info: SourceInfo) -> None:
    data = {"source": info.name, **({"path": "/images"} if info.needs_path else {})}
    from_dict({"data": data})
    if info.needs_path:
        with pytest.raises(TunerError, match=r"data\.path: the \w+ source needs the path"):
            from_dict({"data": {"source": info.name}})
    test_as_val = {"data": {**data, "val_source": "test"}}
    if info.test_split == "always":
        assert from_dict(test_as_val).data.val_source == "test"
    else:
        with pytest.raises(TunerError, match=rf"{info.name} has none: use holdout"):
            from_dict(test_as_val)
    # test_source auto holds a test split out only where the source never has one of its own
    fractions = {"data": {**data, "val_fraction": 0.5, "test_fraction": 0.45}}
    if info.test_split == "never":
        with pytest.raises(TunerError, match="leave less than 10%"):
            from_dict(fractions)
    else:
        assert from_dict(fractions).data.test_fraction == 0.45
