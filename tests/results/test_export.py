"""Export: atomic folder, verified accuracy, clear refusals; load_model for users."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import TINY, single_thread, tiny_context
from tuner.config import load_config
from tuner.data import normalize, prepare_data
from tuner.engine.weights import file_sha256
from tuner.errors import TunerError
from tuner.results.export import ExportRequest, describe, export_trial, load_model
from tuner.results.export_modes import RefitRecipe
from tuner.run.workers import run_worker
from tuner.search import study as study_mod
from tuner.search.storage import artifact_store


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
    result = export_trial(pinned, context.store, ExportRequest(tmp_path / "best"))
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
    export_trial(pinned, context.store, ExportRequest(tmp_path / "best"))
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
    export_trial(pinned, context.store, ExportRequest(tmp_path / "best"))
    with (tmp_path / "best" / "model.safetensors").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(TunerError, match="do not match the SHA-256"):
        load_model(tmp_path / "best")


def test_evicted_and_unfinished_trials_cannot_be_exported(searched, tmp_path: Path) -> None:
    pinned, context = searched
    ranked = study_mod.ranked_trials(pinned.study)
    with pytest.raises(TunerError, match="only the top 1 complete trials keep theirs"):
        export_trial(
            pinned, context.store, ExportRequest(tmp_path / "x"), trial_number=ranked[-1].number
        )
    with pytest.raises(TunerError, match="has no trial #99"):
        export_trial(pinned, context.store, ExportRequest(tmp_path / "x"), trial_number=99)


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
        export_trial(pinned, context.store, ExportRequest(tmp_path / "x", formats=["gif"]))
    assert not (tmp_path / "x").exists()


def test_a_study_without_complete_trials(make_context, tmp_path: Path) -> None:
    pinned, context = make_context()
    with pytest.raises(TunerError, match="no completed trial yet"):
        export_trial(pinned, context.store, ExportRequest(tmp_path / "x"))


def test_a_checkpoint_missing_from_the_store(searched, tmp_path: Path) -> None:
    pinned, _ = searched
    empty = artifact_store(str(tmp_path / "elsewhere"))
    with pytest.raises(TunerError, match="not in the artifact store"):
        export_trial(pinned, empty, ExportRequest(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def _test_accuracy_on_reload(folder: Path, config) -> tuple[float, int]:
    """The exported model's accuracy on the study's test images, from a fresh load_model."""
    data = prepare_data(config.data, with_test=True)
    model = load_model(folder).model
    with torch.no_grad():
        predictions = model(normalize(data.test_images)).argmax(1)
    return (predictions == data.test_labels).float().mean().item(), len(data.test_labels)


def test_export_tests_once_on_the_held_out_split_and_records_it(searched, tmp_path: Path) -> None:
    pinned, context = searched
    result = export_trial(pinned, context.store, ExportRequest(tmp_path / "best"))
    config = json.loads((tmp_path / "best" / "config.json").read_text())
    accuracy, images = _test_accuracy_on_reload(tmp_path / "best", pinned.config)
    test = config["test"]
    assert (test["accuracy"], test["images"]) == (pytest.approx(accuracy), images)
    assert test["split"] == "a stratified holdout" and config["data"]["test_images"] == images
    assert test["ci95"][0] < test["accuracy"] < test["ci95"][1] or test["accuracy"] in (0, 1)
    assert result.test.accuracy.value == pytest.approx(accuracy)
    metrics = json.loads((tmp_path / "best" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] == test["accuracy"]
    assert sum(map(sum, metrics["test"]["confusion_matrix"]["rows_true_cols_predicted"])) == images
    card = (tmp_path / "best" / "MODEL_CARD.md").read_text()
    assert "## Test accuracy" in card and f"{test['correct']} of {images} test images" in card
    recorded = pinned.study.user_attrs[f"tuner:test:{result.trial_number}"]
    assert recorded["test"]["correct"] == test["correct"] and recorded["refit"] is None
    assert "test accuracy: " in describe(result)


def test_refit_exports_a_model_whose_test_accuracy_is_reproduced_on_reload(
    searched, tmp_path: Path, tiny_data
) -> None:
    pinned, context = searched
    lines: list[str] = []
    with single_thread():
        result = export_trial(
            pinned, context.store, ExportRequest(tmp_path / "refit", refit=True), say=lines.append
        )
    best = study_mod.ranked_trials(pinned.study)[0]
    config = json.loads((tmp_path / "refit" / "config.json").read_text())
    refit = config["refit"]
    assert refit["epochs"] == best.user_attrs["best_epoch"] + 1
    assert refit["train_images"] == len(tiny_data.train_labels) + len(tiny_data.val_labels)
    assert refit["seed"] == best.user_attrs["seed"] and refit["device"] == "cpu"
    accuracy, _ = _test_accuracy_on_reload(tmp_path / "refit", pinned.config)
    assert config["test"]["accuracy"] == pytest.approx(accuracy)  # reproduced on reload
    # the search's own checkpoint, tested on the same images, with the paired comparison
    searched_test = config["test"]["search_checkpoint"]
    versus = config["test"]["refit_vs_search"]
    assert versus["points"] == pytest.approx(
        100 * (config["test"]["accuracy"] - searched_test["accuracy"])
    )
    assert 0 <= versus["p_value"] <= 1 and versus["test"] == "exact McNemar"
    plain = export_trial(pinned, context.store, ExportRequest(tmp_path / "plain"))
    assert searched_test["correct"] == plain.test.accuracy.correct
    assert file_sha256(tmp_path / "refit" / "model.safetensors") != file_sha256(
        tmp_path / "plain" / "model.safetensors"
    )  # other weights: trained on more images
    assert any(line.startswith("refit: epoch 1/") for line in lines)
    assert isinstance(result.mode, RefitRecipe)
    assert result.mode.refit.epochs == refit["epochs"]
    assert "refit vs the search's checkpoint: " in describe(result)
    card = (tmp_path / "refit" / "MODEL_CARD.md").read_text()
    assert "the exported weights are a refit" in card and "search's own checkpoint" in card


def test_without_a_test_split_the_export_says_so(tmp_path: Path) -> None:
    data = prepare_data(load_config(None, [*TINY, "data.test_source=none"]).data)
    pinned, context = tiny_context(
        tmp_path, data, "data.test_source=none", "search.pruner=none", "search.trials=1"
    )
    with single_thread():
        run_worker(pinned.study, context)
        result = export_trial(pinned, context.store, ExportRequest(tmp_path / "best"))
    assert result.test is None
    config = json.loads((tmp_path / "best" / "config.json").read_text())
    assert config["test"] == {"split": "none"} and config["data"]["test_images"] == 0
    assert "no held-out test split" in describe(result)
    assert "keeps no held-out test split" in (tmp_path / "best" / "MODEL_CARD.md").read_text()
