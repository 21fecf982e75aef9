"""Export formats: each file, loaded back by its own runtime, gives the PyTorch model's logits."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.helpers import needs_onnx
from tuner.config import ResolvedWeights
from tuner.data.augment import normalize
from tuner.data.prepare import PreparedData
from tuner.engine.model import build_model
from tuner.errors import TunerError
from tuner.results.formats import FORMATS, batched_logits, require_installed, resolve, write_checked

pytestmark = pytest.mark.usefixtures("one_thread")

BATCH = 20  # the validation split is 50 images: the last batch is smaller than the traced one


def make_model(classes: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("resnet18", classes, ResolvedWeights.random_init()).eval()


@pytest.fixture(scope="module")
def model(tiny_data: PreparedData) -> nn.Module:
    return make_model(tiny_data.num_classes, seed=0)


@pytest.fixture(scope="module")
def reference(model: nn.Module, tiny_data: PreparedData) -> torch.Tensor:
    return batched_logits(model, tiny_data.val_images, BATCH)


def load_with_its_runtime(name: str, path: Path, like: nn.Module) -> torch.Tensor:
    """Load the file the way the model card tells users to, without tuner's code."""
    if name == "safetensors":
        from safetensors.torch import load_file

        model = make_model(like.fc.out_features, seed=1)  # other weights until the file loads
        model.load_state_dict(load_file(path))
        return model
    if name == "torchscript":
        return torch.jit.load(path)
    import onnxruntime

    session = onnxruntime.InferenceSession(path)
    return lambda x: torch.from_numpy(session.run(None, {"images": x.numpy()})[0])


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.* is deprecated:FutureWarning")
@pytest.mark.parametrize(
    "name", ["safetensors", "torchscript", pytest.param("onnx", marks=needs_onnx)]
)
def test_a_written_file_reproduces_the_pytorch_logits(
    name: str, model: nn.Module, reference: torch.Tensor, tiny_data: PreparedData, tmp_path: Path
) -> None:
    check = write_checked(FORMATS[name], model, tmp_path, tiny_data.val_images, reference, BATCH)
    assert check.ok and check.agreeing == check.images == len(tiny_data.val_images)
    assert check.max_abs_logit_diff <= 1e-4
    loaded = load_with_its_runtime(name, tmp_path / FORMATS[name].file, model)
    with torch.no_grad():
        logits = loaded(normalize(tiny_data.val_images[:7]))  # a batch size never seen before
    torch.testing.assert_close(logits, reference[:7], atol=1e-4, rtol=1e-4)


def test_a_file_that_answers_differently_is_refused(
    tiny_data: PreparedData, reference: torch.Tensor, tmp_path: Path
) -> None:
    other = make_model(tiny_data.num_classes, seed=5)
    with pytest.raises(TunerError, match="torchscript export does not reproduce"):
        write_checked(FORMATS["torchscript"], other, tmp_path, tiny_data.val_images, reference, 50)


def test_resolve_puts_safetensors_first_once_and_rejects_unknown_names() -> None:
    assert [f.name for f in resolve(["torchscript"])] == ["safetensors", "torchscript"]
    assert [f.name for f in resolve([" TorchScript", "safetensors", "torchscript"])] == [
        "safetensors",
        "torchscript",
    ]
    with pytest.raises(
        TunerError, match=r"unknown format 'tflite'.*safetensors, torchscript, onnx"
    ):
        resolve(["tflite"])


def test_a_missing_package_names_the_extra_to_install() -> None:
    onnx = FORMATS["onnx"]
    absent = dataclasses.replace(onnx, requires=(*onnx.requires, "tuner_test_absent_module"))
    with pytest.raises(TunerError) as error:
        require_installed(absent)
    message = str(error.value)
    assert "--format onnx" in message and "missing: tuner_test_absent_module" in message
    assert 'pip install -e ".[onnx]"' in message and "\n" not in message


@needs_onnx
def test_the_onnx_extra_is_complete_here() -> None:
    require_installed(FORMATS["onnx"])  # raises if pyproject's extra misses a module it needs
