"""MODEL_CARD.md: what it says matches the export, and its code snippets run."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from tuner.config import DATA_SOURCES
from tuner.data.prepare import PreparedData
from tuner.engine.weights import file_sha256
from tuner.recipe import TrialParams, describe_schedule
from tuner.results.model_card import CARD_FILE, render


@pytest.fixture(scope="module")
def card(exported: Path) -> str:
    return (exported / CARD_FILE).read_text()


@pytest.fixture(scope="module")
def config(exported: Path) -> dict:
    return json.loads((exported / "config.json").read_text())


def test_card_describes_data_recipe_and_accuracy(card: str, config: dict, tiny_data) -> None:
    assert "scikit-learn's bundled handwritten digits" in card
    assert f"Classes (10): {', '.join(tiny_data.class_names)}." in card
    n_train, n_val = len(tiny_data.train_labels), len(tiny_data.val_labels)
    assert f"Images: {n_train} training, {n_val} validation" in card
    assert "Image size: 16 px" in card and "At most 24 images per class" in card
    assert describe_schedule(TrialParams(**config["params"]), epochs=2) in card
    assert f"weights are from epoch {config['best_epoch']}" in card
    accuracy = f"{100 * config['val_accuracy']:.2f}%"
    assert f"{accuracy} re-measured on export ({n_val} images)" in card


@pytest.mark.parametrize("source", ["cifar100", "fashionmnist", "folder"])
def test_the_card_describes_the_source_from_its_record(
    exported: Path, tmp_path: Path, source: str
) -> None:
    folder = shutil.copytree(exported, tmp_path / "best")
    config = json.loads((folder / "config.json").read_text())
    config["study_config"]["data"].update(source=source, root="/datasets", path="/images")
    (folder / "config.json").write_text(json.dumps(config))
    said = {
        "cifar100": "torchvision CIFAR-100 under `/datasets`",
        "fashionmnist": "torchvision Fashion-MNIST under `/datasets`",
        "folder": "image folder `/images`",
    }[source]
    assert said == DATA_SOURCES[source].describe("/datasets", "/images")
    assert f"* Source: {said}." in render(folder, folder)


def test_per_class_table_matches_the_confusion_matrix(
    card: str, exported: Path, tiny_data: PreparedData
) -> None:
    metrics = json.loads((exported / "metrics.json").read_text())
    matrix = metrics["confusion_matrix"]["rows_true_cols_predicted"]
    train_counts = torch.bincount(tiny_data.train_labels).tolist()
    for i, name in enumerate(tiny_data.class_names):
        accuracy = f"{100 * matrix[i][i] / sum(matrix[i]):.2f}%"
        row = f"| {name} | {train_counts[i]} | {sum(matrix[i])} | {matrix[i][i]} | {accuracy} |"
        assert row in card


def test_files_are_listed_with_their_sha256(card: str, exported: Path, config: dict) -> None:
    files = sorted(p.name for p in exported.iterdir() if p.name != CARD_FILE)
    listed = dict(re.findall(r"^\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$", card, re.MULTILINE))
    assert sorted(listed) == files
    for name, sha in listed.items():
        assert file_sha256(exported / name) == sha
    assert set(config["formats"]) >= {"safetensors", "torchscript"}


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.* is deprecated:FutureWarning")
def test_the_usage_snippets_run_and_agree(
    card: str, exported: Path, tiny_data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = re.findall(r"```python\n(.*?)```", card, re.DOTALL)
    Image.fromarray(tiny_data.val_images[3].permute(1, 2, 0).numpy()).save(tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    with_tuner, prepare, *runtimes = blocks
    assert len(runtimes) == len(json.loads((exported / "config.json").read_text())["formats"]) - 1
    results = []
    for code in (with_tuner, *(prepare + runtime for runtime in runtimes)):
        namespace: dict = {}
        with torch.no_grad():
            exec(code, namespace)
        results.append(namespace["probs"])
    for probs in results[1:]:
        torch.testing.assert_close(probs, results[0], atol=1e-5, rtol=1e-4)
