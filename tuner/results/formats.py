"""The file formats an export can hold, how each is written, and how each is checked.

Every format stores the bare network: input float32 [N, 3, S, S] (S = the study's
``image_size``), RGB scaled to 0..1 and normalised with the ImageNet mean/std; output
logits [N, num_classes]. Preprocessing is not baked in, so ``tuner.load_model``'s
``preprocess`` (or the same steps written out) must come first. After writing, each file
is loaded back and run on the validation images; its logits must match the PyTorch model's
(and with them its predictions), so an export never holds a file that answers differently.
"""

from __future__ import annotations

import copy
import importlib.util
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from tuner.data import normalize
from tuner.errors import TunerError

Runner = Callable[[Tensor], Tensor]
"""A loaded model file: normalised float [N,3,S,S] -> float32 logits [N,C] on the CPU."""

LOGIT_TOLERANCE = 1e-3
"""Largest |logit difference| a format may show, relative to the largest |logit| (at least 1)."""


@dataclass(frozen=True)
class Format:
    """One export format.

    Attributes:
        name: what ``--format`` calls it.
        file: the file it writes in the export folder.
        requires: modules it needs beyond tuner's dependencies (from the ``extra``).
        extra: the optional-dependency group of tuner that installs them.
        write: (eval-mode model, example input batch, path) -> writes the file.
        open: (path, the model it was written from) -> a Runner over the file.
    """

    name: str
    file: str
    requires: tuple[str, ...]
    extra: str | None
    write: Callable[[nn.Module, Tensor, Path], None]
    open: Callable[[Path, nn.Module], Runner]


@dataclass(frozen=True)
class FormatCheck:
    """How an exported file answered on the validation images, next to the PyTorch model."""

    format: str
    file: str
    images: int
    agreeing: int  # images whose argmax equals the PyTorch model's
    max_abs_logit_diff: float
    tolerance: float

    @property
    def ok(self) -> bool:
        """Every logit within the tolerance of PyTorch's.

        That also bounds the predictions: an image can change class only if its two top
        logits are within twice the difference of each other, a tie at float precision, which
        is why ``agreeing`` is recorded but not required to be all the images.
        """
        return self.max_abs_logit_diff <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "images": self.images,
            "argmax_agreeing": self.agreeing,
            "max_abs_logit_diff": self.max_abs_logit_diff,
            "tolerance": self.tolerance,
            "ok": self.ok,
        }

    def describe(self) -> str:
        return (
            f"{self.format} ({self.file}): {self.agreeing}/{self.images} predictions agree, "
            f"max |logit diff| {self.max_abs_logit_diff:.1e}"
        )


# --- the formats ---------------------------------------------------------------------------


def _write_safetensors(model: nn.Module, example: Tensor, path: Path) -> None:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def _open_safetensors(path: Path, reference: nn.Module) -> Runner:
    model = copy.deepcopy(reference)
    model.load_state_dict(load_file(str(path)))  # strict: every tensor now comes from the file
    return model.eval()


def _write_torchscript(model: nn.Module, example: Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        # torch marks torch.jit as deprecated; the user asked for this format (see README).
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.trace(model, example).save(str(path))


def _open_torchscript(path: Path, reference: nn.Module) -> Runner:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu").eval()


def _write_onnx(model: nn.Module, example: Tensor, path: Path) -> None:
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        dynamo=True,
        external_data=False,  # one self-contained file (ResNet-152 is far below protobuf's 2 GB)
        verbose=False,
    )


def _open_onnx(path: Path, reference: nn.Module) -> Runner:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda images: torch.from_numpy(session.run(None, {"images": images.numpy()})[0])


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("safetensors", "model.safetensors", (), None, _write_safetensors, _open_safetensors),
        Format("torchscript", "model.pt", (), None, _write_torchscript, _open_torchscript),
        Format(
            "onnx",
            "model.onnx",
            ("onnx", "onnxscript", "onnxruntime"),
            "onnx",
            _write_onnx,
            _open_onnx,
        ),
    )
}
DEFAULT_FORMATS = ("safetensors",)


def resolve(names: Iterable[str]) -> tuple[Format, ...]:
    """``--format`` values -> the formats to write, safetensors always first.

    safetensors is always included: ``load_model`` and ``tuner predict`` read it. Raises
    TunerError, before anything is read or written, for an unknown name or a format whose
    packages are not installed.
    """
    wanted = ["safetensors"]
    for name in (n.strip().lower() for n in names):
        if name not in FORMATS:
            raise TunerError(
                f"--format: unknown format {name!r}; use a comma-separated list of "
                f"{', '.join(FORMATS)}."
            )
        if name not in wanted:
            wanted.append(name)
    chosen = tuple(FORMATS[name] for name in wanted)
    for fmt in chosen:
        require_installed(fmt)
    return chosen


def require_installed(fmt: Format) -> None:
    """Raise TunerError naming the install command when a module ``fmt`` needs is missing."""
    missing = [module for module in fmt.requires if importlib.util.find_spec(module) is None]
    if missing:
        raise TunerError(
            f"--format {fmt.name} needs {', '.join(fmt.requires)} (missing: "
            f'{", ".join(missing)}); install them with pip install -e ".[{fmt.extra}]" '
            f'(or pip install "tuner[{fmt.extra}]").'
        )


# --- writing and checking ------------------------------------------------------------------


@torch.no_grad()
def batched_logits(run: Runner, images_uint8: Tensor, batch_size: int) -> Tensor:
    """float32 logits [N,C] of ``run`` on uint8 images, normalised batch by batch on the CPU."""
    return torch.cat(
        [
            run(normalize(images_uint8[start : start + batch_size])).float()
            for start in range(0, len(images_uint8), batch_size)
        ]
    )


def write_checked(
    fmt: Format,
    model: nn.Module,
    folder: Path,
    images_uint8: Tensor,
    reference_logits: Tensor,
    batch_size: int,
) -> FormatCheck:
    """Write ``fmt`` into ``folder``, load it back and compare it on ``images_uint8``.

    ``reference_logits`` are the eval-mode PyTorch model's on the same images. Raises
    TunerError when the file's predictions differ, so the caller writes no export.
    """
    model.eval()
    # Traced and exported with two images: a batch of one would fix the batch size.
    fmt.write(model, normalize(images_uint8[:2]), folder / fmt.file)
    logits = batched_logits(fmt.open(folder / fmt.file, model), images_uint8, batch_size)
    check = compare(fmt, logits, reference_logits)
    if not check.ok:
        raise TunerError(
            f"the {fmt.name} export does not reproduce the PyTorch model: {check.describe()} "
            f"(tolerance {check.tolerance:.1e}). Nothing was written; export without "
            f"--format {fmt.name}, or report this with your torch version."
        )
    return check


def compare(fmt: Format, logits: Tensor, reference_logits: Tensor) -> FormatCheck:
    """Agreement of ``logits`` with ``reference_logits`` (same images, same order)."""
    scale = max(1.0, reference_logits.abs().max().item())
    return FormatCheck(
        format=fmt.name,
        file=fmt.file,
        images=len(reference_logits),
        agreeing=int((logits.argmax(1) == reference_logits.argmax(1)).sum()),
        max_abs_logit_diff=(logits - reference_logits).abs().max().item(),
        tolerance=LOGIT_TOLERANCE * scale,
    )
