"""Export: atomic folder, verified accuracy, clear refusals; load_model for users."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import tiny_context
from tuner.engine.weights import file_sha256
from tuner.errors import TunerError
from tuner.results.export import export_trial, load_model
from tuner.search import study as study_mod
from tuner.search.storage import artifact_store
from tuner.search.workers import run_worker


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, tiny_data):
    """One small search shared by the module's tests (none of them changes it)."""
    pinned, context = tiny_context(
        tmp_path_factory.mktemp("export"),
        tiny_data,
        "search.keep_checkpoints=1",
        "search.pruner=none",
        "search.trials=3",
    )
    run_worker(pinned.study, context)
    return pinned, context


def test_export_writes_verified_files(searched, tmp_path: Path, tiny_data) -> None:
    pinned, context = searched
    result = export_trial(pinned, context.store, tmp_path / "best")
    best = study_mod.ranked_trials(pinned.study)[0]
    assert result.trial_number == best.number
    assert result.verified_accuracy == pytest.approx(best.value, abs=1e-9)
    config = json.loads((tmp_path / "best" / "config.json").read_text())
    assert config["class_names"] == list(tiny_data.class_names)
    assert config["params"] == best.user_attrs["params"]
    assert len(config["weights_sha256"]) == 64
    metrics = json.loads((tmp_path / "best" / "metrics.json").read_text())
    matrix = torch.tensor(metrics["confusion_matrix"]["rows_true_cols_predicted"])
    assert matrix.sum() == len(tiny_data.val_labels)
    assert matrix.trace() / matrix.sum() == pytest.approx(result.verified_accuracy)
    assert not list(tmp_path.glob(".best*"))  # no temp folders left behind


def test_load_model_gives_eval_model_and_matching_preprocessing(
    searched, tmp_path: Path, tiny_data
) -> None:
    pinned, context = searched
    export_trial(pinned, context.store, tmp_path / "best")
    model, preprocess, class_names, _ = load_model(tmp_path / "best")
    assert not model.training and class_names == tiny_data.class_names
    image = tiny_data.val_images[0]
    as_pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    as_pil.save(tmp_path / "one.png")
    batches = [preprocess(image), preprocess(as_pil), preprocess(str(tmp_path / "one.png"))]
    for batch in batches[1:]:
        assert torch.equal(batch, batches[0])
    assert preprocess([image, image]).shape == (2, 3, 16, 16)


def test_tampered_weights_are_refused(searched, tmp_path: Path) -> None:
    pinned, context = searched
    export_trial(pinned, context.store, tmp_path / "best")
    with (tmp_path / "best" / "model.safetensors").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(TunerError, match="do not match the SHA-256"):
        load_model(tmp_path / "best")


def test_evicted_and_unfinished_trials_cannot_be_exported(searched, tmp_path: Path) -> None:
    pinned, context = searched
    ranked = study_mod.ranked_trials(pinned.study)
    with pytest.raises(TunerError, match="only the top 1 complete trials keep theirs"):
        export_trial(pinned, context.store, tmp_path / "x", trial_number=ranked[-1].number)
    with pytest.raises(TunerError, match="has no trial #99"):
        export_trial(pinned, context.store, tmp_path / "x", trial_number=99)


def test_every_format_is_recorded_with_its_check_and_hash(exported: Path, tiny_data) -> None:
    config = json.loads((exported / "config.json").read_text())
    assert list(config["formats"])[:2] == ["safetensors", "torchscript"]
    for entry in config["formats"].values():
        assert entry["ok"] and entry["images"] == entry["argmax_agreeing"] == len(
            tiny_data.val_labels
        )
        assert entry["sha256"] == file_sha256(exported / entry["file"])
    assert config["weights_sha256"] == config["formats"]["safetensors"]["sha256"]
    assert config["data"]["train_images"] == len(tiny_data.train_labels)
    assert sum(config["data"]["train_per_class"]) == len(tiny_data.train_labels)
    assert ("onnxruntime" in config["versions"]) == ("onnx" in config["formats"])


def test_an_unknown_format_is_refused_before_anything_is_read(make_context, tmp_path) -> None:
    pinned, context = make_context()  # no trial yet: the format is checked first
    with pytest.raises(TunerError, match="unknown format 'gif'"):
        export_trial(pinned, context.store, tmp_path / "x", formats=["gif"])
    assert not (tmp_path / "x").exists()


def test_a_study_without_complete_trials(make_context, tmp_path: Path) -> None:
    pinned, context = make_context()
    with pytest.raises(TunerError, match="no completed trial yet"):
        export_trial(pinned, context.store, tmp_path / "x")


def test_a_checkpoint_missing_from_the_store(searched, tmp_path: Path) -> None:
    pinned, _ = searched
    empty = artifact_store(str(tmp_path / "elsewhere"))
    with pytest.raises(TunerError, match="not in the artifact store"):
        export_trial(pinned, empty, tmp_path / "x")
    assert not (tmp_path / "x").exists()
