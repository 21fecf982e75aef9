"""tuner predict: batched top-k over files and folders, bad files skipped and reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.helpers import save_image
from tuner import cli
from tuner.data.prepare import PreparedData
from tuner.errors import TunerError
from tuner.results.export import load_model
from tuner.results.predict import format_json_lines, format_table, predict

pytestmark = pytest.mark.usefixtures("one_thread")


def pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(image.permute(1, 2, 0).numpy())


@pytest.fixture
def images(tmp_path: Path, tiny_data: PreparedData) -> Path:
    """Five validation images in a nested folder, a corrupt PNG, a text file, a hidden image."""
    folder = tmp_path / "images"
    for i, name in enumerate(["b.png", "a.png", "sub/c.jpg", "sub/deeper/d.bmp", "e.PNG"]):
        save_image(folder / name, pil(tiny_data.val_images[i]))
    (folder / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (folder / "notes.txt").write_text("not an image")
    save_image(folder / ".hidden.png", pil(tiny_data.val_images[0]))
    return folder


def test_folders_are_walked_sorted_and_bad_files_skipped(exported: Path, images: Path) -> None:
    outcome = predict(exported, [images], top_k=3)
    names = [p.path.relative_to(images).as_posix() for p in outcome.predictions]
    assert names == ["a.png", "b.png", "e.PNG", "sub/c.jpg", "sub/deeper/d.bmp"]
    assert [(path.name, "cannot identify" in why) for path, why in outcome.bad_files] == [
        ("broken.png", True)
    ]


def test_top_k_is_ordered_probabilities_of_the_models_own_output(
    exported: Path, images: Path, tiny_data: PreparedData
) -> None:
    outcome = predict(exported, [images / "a.png", images / "b.png"], top_k=4, batch_size=1)
    model, preprocess, class_names, _ = load_model(exported)
    with torch.no_grad():
        expected = model(preprocess(list(tiny_data.val_images[[1, 0]]))).softmax(1)
    for prediction, row in zip(outcome.predictions, expected, strict=True):
        probs = [p for _, p in prediction.top]
        assert len(probs) == 4 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        best = int(row.argmax())
        assert prediction.top[0] == (class_names[best], pytest.approx(row[best].item(), abs=1e-5))


def test_batching_does_not_change_answers_and_k_is_capped_at_the_classes(
    exported: Path, images: Path
) -> None:
    one_by_one = predict(exported, [images], top_k=99, batch_size=1)
    batched = predict(exported, [images], top_k=99, batch_size=64)
    for a, b in zip(one_by_one.predictions, batched.predictions, strict=True):
        assert [n for n, _ in a.top] == [n for n, _ in b.top]
        assert [p for _, p in a.top] == pytest.approx([p for _, p in b.top], abs=1e-5)
        assert len(a.top) == 10 and sum(p for _, p in a.top) == pytest.approx(1.0, abs=1e-5)


def test_table_and_json_lines(exported: Path, images: Path) -> None:
    outcome = predict(exported, [images / "sub"], top_k=2)
    table = format_table(outcome).splitlines()
    assert table[0].split() == ["path", "top", "1", "top", "2"]
    assert len(table) == 3 and str(images / "sub" / "c.jpg") in table[1]
    first = outcome.predictions[0].top[0]
    assert f"{first[0]} ({first[1]:.3f})" in table[1]
    objects = [json.loads(line) for line in format_json_lines(outcome).splitlines()]
    assert [o["path"] for o in objects] == [str(p.path) for p in outcome.predictions]
    assert objects[0]["top"][0] == {"class": first[0], "probability": first[1]}


def test_cli_reports_bad_files_on_stderr_and_exits_2(
    exported: Path, images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["predict", str(exported), str(images), "--json"]) == 2
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 5
    assert f"skipped {images / 'sub' / 'broken.png'}" in err and "Traceback" not in err
    assert cli.main(["predict", str(exported), str(images / "a.png"), "--top-k", "1"]) == 0
    out, err = capsys.readouterr()
    assert "a.png" in out and err == ""


@pytest.mark.parametrize(
    ("model_dir", "message"),
    [("nowhere", "nowhere: no such folder"), ("images", "images: not a tuner export")],
)
def test_a_folder_that_is_not_an_export(
    model_dir: str, message: str, images: Path, tmp_path: Path, capsys
) -> None:
    assert cli.main(["predict", str(tmp_path / model_dir), str(images)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "tuner export-best --out DIR" in err and "\n" not in err


def test_no_images_and_bad_top_k_are_user_errors(exported: Path, tmp_path: Path) -> None:
    with pytest.raises(TunerError, match=r"no image files \(.*\) in "):
        predict(exported, [tmp_path])
    with pytest.raises(TunerError, match=r"gone\.png: no such file or folder"):
        predict(exported, [tmp_path / "gone.png"])
    with pytest.raises(TunerError, match="--top-k must be at least 1"):
        predict(exported, [tmp_path], top_k=0)
