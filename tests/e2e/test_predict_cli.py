"""`tuner export-best --format ...` then `tuner predict` through the real command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.e2e.tuner_cli import run_tuner
from tests.helpers import format_installed, save_image

pytestmark = pytest.mark.slow


def test_export_every_format_then_predict_a_folder(tmp_path: Path, tiny_study_file: Path) -> None:
    searched = run_tuner(tmp_path, "search", tiny_study_file.name, "--trials", "1")
    assert searched.returncode == 0, searched.stderr[-3000:]
    formats = ["safetensors", "torchscript", *(["onnx"] if format_installed("onnx") else [])]
    exported = run_tuner(tmp_path, "export-best", "--out", "best", "--format", ",".join(formats))
    assert exported.returncode == 0, exported.stderr[-3000:]
    for name in formats:
        assert f"verified {name} (" in exported.stdout
    config = json.loads((tmp_path / "best" / "config.json").read_text())
    assert list(config["formats"]) == formats and all(f["ok"] for f in config["formats"].values())
    assert "## How to use it" in (tmp_path / "best" / "MODEL_CARD.md").read_text()

    folder = tmp_path / "photos"
    colours = {"red.png": (200, 30, 30), "dark/grey.png": (40, 40, 40), "white.png": (255,) * 3}
    for name, colour in colours.items():
        save_image(folder / name, Image.new("RGB", (20, 12), colour))
    (folder / "corrupt.png").write_bytes(b"definitely not a PNG")
    table = run_tuner(tmp_path, "predict", "best", "photos", "--top-k", "2")
    assert table.returncode == 2
    assert "skipped photos/corrupt.png" in table.stderr and "Traceback" not in table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["path", "top", "1", "top", "2"]
    assert [line.split()[0] for line in lines[1:]] == [
        "photos/dark/grey.png",
        "photos/red.png",
        "photos/white.png",
    ]
    as_json = run_tuner(tmp_path, "predict", "best", "photos/red.png", "--json")
    assert as_json.returncode == 0, as_json.stderr
    (answer,) = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert answer["path"] == "photos/red.png" and len(answer["top"]) == 3
    assert answer["top"][0]["class"] in config["class_names"]


def test_predict_without_an_export_is_one_clear_line(tmp_path: Path) -> None:
    result = run_tuner(tmp_path, "predict", "missing-export", "photo.png")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "tuner predict: error: missing-export: no such folder (an export has config.json and "
        "model.safetensors). Give the folder that `tuner export-best --out DIR` wrote."
    ]
