"""decode.py and the prepare it serves: every core, a memory-mapped entry, nothing half-built."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.e2e.tuner_cli import run_tuner, start_tuner
from tuner.config import DataConfig
from tuner.data.cache import entry_path
from tuner.data.decode import CHUNK, decode_into
from tuner.data.images import fit_square, load_fitted, load_image_file
from tuner.data.prepare import prepare_data


def _jpeg_tree(root: Path, per_class: int, size: tuple[int, int] = (40, 30)) -> Path:
    """Real JPEG files of varied content (and a few sizes) in two class folders."""
    rng = np.random.default_rng(0)
    for label in range(2):
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            width, height = size[0] + i % 7, size[1] + i % 5
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8) // (label + 1)
            Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def _folder_config(root: Path, **keys: object) -> DataConfig:
    return DataConfig(source="folder", path=str(root), image_size=24, **keys)


def test_two_processes_prepare_the_same_bytes_as_one(tmp_path: Path) -> None:
    root = _jpeg_tree(tmp_path / "images", per_class=4 * CHUNK + 10)  # enough for 2 processes
    (root / "class1" / "broken.jpg").write_bytes(b"not a jpeg")
    config = {"skip_bad_images": True}
    one = prepare_data(_folder_config(root, prepare_workers=1, **config), with_test=True)
    two = prepare_data(_folder_config(root, prepare_workers=2, **config), with_test=True)
    assert one.fingerprint == two.fingerprint
    for name in ("train", "val", "test"):
        for part in ("images", "labels"):
            key = f"{name}_{part}"
            assert torch.equal(getattr(one, key), getattr(two, key)), key
    assert one.skipped_files == two.skipped_files == (str(root / "class1" / "broken.jpg"),)
    sizes = (len(one.train_labels), len(one.val_labels), len(one.test_labels))
    assert sum(sizes) == 2 * (4 * CHUNK + 10) and sizes[2] == one.test_count > 0


def test_decoded_rows_are_what_prediction_time_loading_gives(tmp_path: Path) -> None:
    paths = [tmp_path / "big.jpg", tmp_path / "small.png", tmp_path / "bad.jpg"]
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (600, 900, 3), np.uint8)).save(
        paths[0], quality=90
    )
    Image.new("RGB", (30, 20), (10, 200, 30)).save(paths[1])
    paths[2].write_bytes(b"\xff\xd8 truncated")
    bad = decode_into(paths, 64, tmp_path / "rows.npy", processes=2)
    rows = np.load(tmp_path / "rows.npy")
    assert bad == [2] and rows.shape == (3, 3, 64, 64) and not rows[2].any()
    for row, path in zip(rows[:2], paths[:2], strict=True):
        assert np.array_equal(row, load_fitted(path, 64).numpy())
    # the JPEG was decoded at a DCT scale (900x600 -> 1/8 = 112x75), not at full size
    assert tuple(load_image_file(paths[0], fit_to=64).shape) == (3, 75, 113)
    full = fit_square(load_image_file(paths[0]), 64)
    assert (full.float() - torch.from_numpy(rows[0]).float()).abs().mean() < 8  # same picture


def _cache_folders(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3000 small JPEGs: a prepare that takes a few seconds, long enough to interrupt."""
    return _jpeg_tree(tmp_path_factory.mktemp("photos"), per_class=1500, size=(160, 120))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_an_interrupted_prepare_leaves_no_entry_and_the_next_one_builds_it(
    tmp_path: Path, photos: Path, how: str
) -> None:
    """Interrupted at its first progress line, a prepare leaves nothing half-built.

    On a fast machine, or one whose test process is descheduled, the prepare can finish
    before the signal lands: it then leaves its complete entry, rightly, and the test tries
    again in a fresh folder, up to three times, to see one interrupted while building.
    """
    sets = ["--set", "data.source=folder", "--set", f"data.path={photos}"]
    sets += ["--set", "data.image_size=64"]
    cfg = DataConfig(source="folder", path=str(photos), image_size=64, cache_dir="tuner-cache")
    for attempt in range(3):
        folder = tmp_path / f"attempt{attempt}"
        folder.mkdir()
        code = _interrupt_a_prepare(folder, sets, getattr(signal, how))
        entry = folder / entry_path(cfg)
        if not entry.exists():
            break
        assert (entry / "meta.json").is_file(), "a half-built entry"  # it had finished
    else:
        pytest.fail(f"every prepare finished before its {how} landed: give it more to decode")
    if how == "SIGINT":  # Ctrl-C: the build folder is removed at once
        assert code == 130 and _cache_folders(folder / "tuner-cache") == []
        assert "Nothing half-built is kept" in (folder / "prepare.log").read_text()
    else:
        assert code == -signal.SIGKILL
        # its decoders die with it, not left waiting forever on the pool's queue
        deadline = time.monotonic() + 30
        while _processes_naming(str(photos)):
            assert time.monotonic() < deadline, f"orphans: {_processes_naming(str(photos))}"
            time.sleep(0.2)
    result = run_tuner(folder, "prepare", *sets)
    assert result.returncode == 0, result.stderr
    assert "data ready: " in result.stdout and "images/s" in result.stdout
    assert _cache_folders(folder / "tuner-cache") == [entry.name]  # the killed build swept
    again = run_tuner(folder, "prepare", *sets)
    assert "already prepared" in again.stdout


def _interrupt_a_prepare(folder: Path, sets: list[str], how: signal.Signals) -> int:
    """Start ``tuner prepare`` in ``folder``, send it ``how`` at its first progress line; its
    exit code."""
    process = start_tuner(folder, "prepare", *sets, log="prepare.log",
                          env={"TUNER_PROGRESS_SECONDS": "0"})  # fmt: skip
    deadline = time.monotonic() + 120
    while "preparing data: " not in (folder / "prepare.log").read_text():
        assert process.poll() is None and time.monotonic() < deadline, "no progress shown"
        time.sleep(0.02)
    process.send_signal(how)
    return process.wait(timeout=60)


def _processes_naming(text: str) -> list[int]:
    """The pids of running processes whose command line contains ``text``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:  # it ended while we looked
            continue
    return found


def test_prepare_lists_unreadable_files_and_builds_nothing(tmp_path: Path) -> None:
    root = _jpeg_tree(tmp_path / "images", per_class=5)
    for name in ("a.jpg", "b.png"):
        (root / "class0" / name).write_bytes(b"garbage")
    result = run_tuner(
        tmp_path, "prepare", "--set", "data.source=folder", "--set", f"data.path={root}"
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "data.path: 2 image file(s) could not be read" in result.stderr
    assert str(root / "class0" / "a.jpg") in result.stderr
    assert str(root / "class0" / "b.png") in result.stderr
    assert _cache_folders(tmp_path / "tuner-cache") == []


def test_prepare_without_a_cache_is_refused(tmp_path: Path) -> None:
    result = run_tuner(tmp_path, "prepare", "--set", "data.cache_dir=none")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "data.cache_dir: none" in result.stderr


def test_prepare_then_search_decodes_nothing_again(tmp_path: Path) -> None:
    result = run_tuner(tmp_path, "prepare")
    assert result.returncode == 0 and "data ready: " in result.stdout, result.stderr
    (entry,) = (tmp_path / "tuner-cache").iterdir()
    built = entry.stat().st_mtime_ns
    assert prepare_data(DataConfig(), tmp_path / "tuner-cache").fingerprint  # a cache hit
    assert entry.stat().st_mtime_ns == built and _cache_folders(tmp_path / "tuner-cache") == [
        entry.name
    ]
