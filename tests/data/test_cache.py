"""datacache.py: the prepared data decoded once per host, memory-mapped, rebuilt on change."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.helpers import save_image
from tuner.config import DataConfig
from tuner.data.prepare import PreparedData, prepare_data
from tuner.errors import TunerError


def _folder(root: Path) -> DataConfig:
    for index, name in enumerate(("cat", "dog")):
        for i in range(6):
            save_image(root / name / f"{i}.png", Image.new("RGB", (12, 10), (40 * index, i, 9)))
    return DataConfig(source="folder", path=str(root), image_size=8)


class _Decoded:
    """A progress callback that counts the images it was told about: 0 means a cache hit."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, done: int, total: int) -> None:
        self.calls += 1


def _same(a: PreparedData, b: PreparedData) -> bool:
    return a.fingerprint == b.fingerprint and all(
        torch.equal(getattr(a, name), getattr(b, name))
        for name in ("train_images", "train_labels", "val_images", "val_labels")
    )


def test_the_second_prepare_reads_the_cache(tmp_path: Path) -> None:
    cfg = _folder(tmp_path / "images")
    cache = tmp_path / "cache"
    first, second = _Decoded(), _Decoded()
    built = prepare_data(cfg, cache, first)
    again = prepare_data(cfg, cache, second)
    assert first.calls > 0 and second.calls == 0  # decoded once
    assert _same(built, prepare_data(cfg)) and _same(again, built)
    assert again.class_names == ("cat", "dog")
    (entry,) = cache.iterdir()
    assert _mapped_from(again.train_images, entry / "train_images.npy")  # shared page cache


def _mapped_from(tensor: torch.Tensor, path: Path) -> bool:
    """Whether the tensor's memory lies in a mapping of ``path`` (Linux's /proc/self/maps)."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, *_, name = line.split(maxsplit=5)
        low, high = (int(x, 16) for x in span.split("-"))
        if name.strip() == str(path) and low <= address < high:
            return True
    return False


def test_a_changed_source_file_rebuilds_the_cache(tmp_path: Path) -> None:
    cfg = _folder(tmp_path / "images")
    cache = tmp_path / "cache"
    before = prepare_data(cfg, cache)
    changed = tmp_path / "images" / "dog" / "0.png"
    Image.new("RGB", (12, 10), (250, 250, 250)).save(changed)
    os.utime(changed, ns=(1_000_000_000, 1_000_000_000))  # a different mtime whatever the clock
    decoded = _Decoded()
    after = prepare_data(cfg, cache, decoded)
    assert decoded.calls > 0
    assert after.fingerprint != before.fingerprint
    assert _same(after, prepare_data(cfg))
    # another image size is another entry, never a hit on this one
    assert (
        prepare_data(DataConfig(**{**vars(cfg), "image_size": 6}), cache).train_images.shape[-1]
        == 6
    )


_BUILD = """
import sys
from pathlib import Path
from tuner.config import DataConfig
from tuner.data.prepare import prepare_data
data = prepare_data(DataConfig(source="folder", path=sys.argv[1], image_size=8), Path(sys.argv[2]))
print(data.fingerprint)
"""


def test_two_processes_building_at_once_leave_one_good_entry(tmp_path: Path) -> None:
    cfg = _folder(tmp_path / "images")
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    args = [sys.executable, "-c", _BUILD, cfg.path, str(cache)]
    builders = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env) for _ in "ab"]
    outputs = [b.communicate(timeout=300)[0].strip() for b in builders]
    assert [b.returncode for b in builders] == [0, 0]
    expected = prepare_data(cfg)
    assert outputs == [expected.fingerprint] * 2
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == []  # no leftovers
    assert len(list(cache.iterdir())) == 1
    assert _same(prepare_data(cfg, cache), expected)


def test_an_unwritable_cache_dir_is_a_tuner_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(TunerError, match=r"data\.cache_dir"):
        prepare_data(_folder(tmp_path / "images"), blocker / "cache")


def test_a_broken_entry_is_rebuilt(tmp_path: Path) -> None:
    cfg = _folder(tmp_path / "images")
    cache = tmp_path / "cache"
    prepare_data(cfg, cache)
    (entry,) = cache.iterdir()
    (entry / "val_images.npy").write_bytes(b"truncated")
    decoded = _Decoded()
    assert _same(prepare_data(cfg, cache, decoded), prepare_data(cfg))
    assert decoded.calls > 0
