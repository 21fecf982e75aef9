"""A trial's checkpoint -> a self-describing export folder; ``load_model`` to use it.

The export is verified before it is written: the rebuilt model is run on the study's
validation split and its accuracy is recorded beside the one the trial reported, and every
exported file is loaded back and must predict what the rebuilt model predicts. The model is
then evaluated once on the held-out test split that nothing in the search reads: the one
accuracy that is not optimistic by construction, with its 95% interval. ``refit`` exports
the recipe trained again on training + validation images instead (:mod:`tuner.results.refit`),
tested beside the search's own checkpoint on the same images; ``soup`` the average of the top
trials' weights (:mod:`tuner.results.soup`), tested beside the best single trial.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from tuner import config as config_mod
from tuner.config import ResolvedWeights
from tuner.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PreparedData,
    fit_square,
    load_image_file,
    normalize,
    pil_to_tensor,
)
from tuner.engine import build_model, file_sha256
from tuner.errors import TunerError
from tuner.progress import Say
from tuner.results import formats as formats_mod
from tuner.results import model_card
from tuner.results import soup as soup_mod
from tuner.results.checkpoints import read_checkpoint
from tuner.results.export_modes import ExportMode, choose_mode
from tuner.results.held_out import TestEvaluation, class_results
from tuner.run.host import load_study_data
from tuner.search import attrs
from tuner.search import study as study_mod
from tuner.search.storage import ArtifactStore

FORMAT_VERSION = 1
WEIGHTS_FILE = formats_mod.FORMATS["safetensors"].file
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class ExportResult:
    """What was exported and how the reloaded model scored."""

    out_dir: Path
    study_name: str
    trial_number: int
    recorded_accuracy: float
    verified_accuracy: float
    checks: tuple[formats_mod.FormatCheck, ...]  # one per exported model file
    mode: ExportMode  # the search's checkpoint, its recipe refit, or a soup
    test: TestEvaluation | None = None  # None: the study has no test split


@dataclass(frozen=True)
class ExportRequest:
    """What `tuner export-best` was asked for, beyond which trial."""

    out_dir: Path
    force: bool = False
    formats: Iterable[str] = formats_mod.DEFAULT_FORMATS
    confirmation: dict[str, Any] | None = None  # from `tuner confirm`: metrics.json, model card
    refit: bool = False  # export the recipe refit on training + validation images
    device: str | None = None  # the refit's or soup's device, instead of train.device
    soup: int | None = None  # --soup K: a greedy soup of the top K trials, not the best alone


def export_trial(
    pinned: study_mod.PinnedStudy,
    store: ArtifactStore,
    request: ExportRequest,
    trial_number: int | None = None,
    say: Say = lambda line: None,
) -> ExportResult:
    """Write the model files, config.json, metrics.json and MODEL_CARD.md, atomically.

    ``formats`` are ``--format`` names (safetensors is always written). Each file is loaded
    back and checked against the PyTorch model on the validation split before the folder
    appears; see :mod:`tuner.results.formats`. The test split is evaluated after that check
    and recorded in the files and on the study (``tuner report`` shows it). ``say`` gets the
    refit's and the soup's progress lines.
    """
    out_dir = _free_out_dir(request)
    chosen = formats_mod.resolve(request.formats)
    soup_mod.check_size(pinned.config, request.soup)
    trial = _pick_trial(pinned.study, trial_number)
    checkpoint, data = _rebuild(pinned, store, trial)
    mode = choose_mode(
        pinned, store, trial, checkpoint, data,
        refit=request.refit, soup=request.soup, device=request.device, say=say,
    )  # fmt: skip
    batch = pinned.config.train.eval_batch_size
    logits = formats_mod.batched_logits(mode.model, data.val_images, batch)
    predictions = logits.argmax(1)
    accuracy = (predictions == data.val_labels).float().mean().item()
    written = _Written(pinned, trial, data, mode, mode.test(data, batch), predictions, accuracy)
    checks: list[formats_mod.FormatCheck] = []

    def fill(folder: Path) -> None:
        checks.extend(
            formats_mod.write_checked(fmt, mode.model, folder, data.val_images, logits, batch)
            for fmt in chosen
        )
        _write_files(folder, out_dir, written, chosen, checks, request.confirmation)

    _write_atomically(out_dir, fill)
    mode.record(pinned.study, trial.number, written.tested)
    return ExportResult(
        out_dir, pinned.study.study_name, trial.number, trial.value, accuracy, tuple(checks),
        mode, written.tested,
    )  # fmt: skip


@dataclass(frozen=True)
class _Written:
    """What the files of one export describe: the study, the trial, its data, the mode, the
    held-out test result, and the exported model's val predictions and accuracy."""

    pinned: study_mod.PinnedStudy
    trial: FrozenTrial
    data: PreparedData
    mode: ExportMode
    tested: TestEvaluation | None
    val_predictions: torch.Tensor
    val_accuracy: float


def _write_files(
    folder: Path,
    out_dir: Path,
    written: _Written,
    chosen: tuple[formats_mod.Format, ...],
    checks: list[formats_mod.FormatCheck],
    confirmation: dict[str, Any] | None,
) -> None:
    """config.json (with each model file's SHA-256), metrics.json and the model card."""
    data, tested, entries = written.data, written.tested, written.mode.entries(written.tested)
    hashes = {check.format: file_sha256(folder / check.file) for check in checks}
    config_json = {
        **_config_json(written, chosen),
        "test": tested.to_dict() if tested else {"split": data.test_split},
        **entries,
        "weights_sha256": hashes["safetensors"],  # what load_model checks
        "formats": {c.format: {**c.to_dict(), "sha256": hashes[c.format]} for c in checks},
    }
    _write_json(folder / CONFIG_FILE, config_json)
    metrics = _metrics_json(written)
    if tested is not None:
        metrics["test"] = tested.metrics(data.class_names)
    if confirmation is not None:
        metrics["confirmation"] = confirmation
    if entries["soup"] is not None:
        metrics["soup"] = entries["soup"]
    _write_json(folder / METRICS_FILE, metrics)
    (folder / model_card.CARD_FILE).write_text(model_card.render(folder, out_dir))


def _free_out_dir(request: ExportRequest) -> Path:
    out_dir = Path(request.out_dir)
    if out_dir.exists() and not request.force:
        raise TunerError(
            f"{out_dir} already exists. Pass --force to replace it, or --out elsewhere."
        )
    return out_dir


def _rebuild(
    pinned: study_mod.PinnedStudy, store: ArtifactStore, trial: FrozenTrial
) -> tuple[nn.Module, PreparedData]:
    """The trial's best-epoch model in eval mode, and the study's data to verify it on."""
    config = pinned.config
    state = read_checkpoint(pinned.study, store, trial, config.search.keep_checkpoints)
    data = load_study_data(config, pinned.study.study_name, pinned.fingerprint, with_test=True)
    arch = attrs.trial_params(trial, config.space).arch
    model = build_model(arch, data.num_classes, ResolvedWeights.random_init())
    model.load_state_dict(state)
    model.eval()
    return model, data


def _pick_trial(study: optuna.Study, number: int | None) -> FrozenTrial:
    if number is None:
        ranked = study_mod.ranked_trials(study)
        if not ranked:
            raise TunerError(
                f"study {study.study_name!r} has no completed trial yet. Run `tuner search` first."
            )
        return ranked[0]
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise TunerError(
            f"study {study.study_name!r} has no trial #{number} (0..{len(trials) - 1})."
        )
    trial = trials[number]
    if trial.state != TrialState.COMPLETE:
        raise TunerError(
            f"trial #{number} is {trial.state.name.lower()}: "
            "only complete trials have a checkpoint."
        )
    return trial


def _config_json(written: _Written, chosen: tuple[formats_mod.Format, ...]) -> dict[str, Any]:
    pinned, trial, data = written.pinned, written.trial, written.data
    config, class_names = pinned.config, data.class_names
    params = attrs.trial_params(trial, config.space)
    return {
        "format_version": FORMAT_VERSION,
        "arch": params.arch,
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "image_size": config.data.image_size,
        "preprocessing": "RGB uint8 (a JPEG decoded at the smallest 1/2, 1/4 or 1/8 scale whose "
        "sides stay >= image_size), shorter side resized to image_size (bilinear, antialias), "
        "center crop, scaled to 0..1, normalised with mean/std",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "params": dataclasses.asdict(params),
        "study_name": pinned.study.study_name,
        "trial_number": trial.number,
        "best_epoch": trial.user_attrs.get(attrs.BEST_EPOCH),
        "val_accuracy": written.val_accuracy,
        "recorded_val_accuracy": trial.value,
        "resolved_weights": pinned.weights[params.arch].to_dict(),
        "study_config": config_mod.to_dict(config),
        "data": {
            "train_images": len(data.train_labels),
            "val_images": len(data.val_labels),
            "test_images": data.test_count,
            "train_per_class": torch.bincount(
                data.train_labels, minlength=data.num_classes
            ).tolist(),
        },
        "versions": _versions([module for fmt in chosen for module in fmt.requires]),
    }


def _metrics_json(written: _Written) -> dict[str, Any]:
    trial, data = written.trial, written.data
    return {
        "val_accuracy": written.val_accuracy,
        "recorded_val_accuracy": trial.value,
        "best_epoch": trial.user_attrs.get(attrs.BEST_EPOCH),
        "epochs": {key: trial.user_attrs.get(key, []) for key in attrs.CURVES},
        **class_results(data.val_labels, written.val_predictions, data.class_names),
    }


def _versions(extra: list[str]) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("tuner", "torch", "torchvision", "optuna", *extra):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return versions


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n")


def _write_atomically(out_dir: Path, fill: Callable[[Path], None]) -> None:
    """``fill`` a temp folder beside ``out_dir``, then swap it in with renames."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        fill(tmp)
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            out_dir.rename(old)
        tmp.rename(out_dir)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def describe(result: ExportResult) -> str:
    """The printout of an export: what was exported, its accuracies, the checked files."""
    files = [check.file for check in result.checks]
    mode, tested = result.mode, result.test
    accuracy = mode.accuracy_lines(result.recorded_accuracy, result.verified_accuracy)
    if tested is None:
        accuracy.append("  test accuracy: no held-out test split (data.test_source: none)")
    else:
        accuracy += mode.test_lines(tested)
    return "\n".join(
        [
            f"exported study {result.study_name!r} {mode.title} #{result.trial_number} "
            f"to {result.out_dir}/",
            *accuracy,
            *(f"  verified {check.describe()}" for check in result.checks),
            f"  files: {', '.join([*files, CONFIG_FILE, METRICS_FILE, model_card.CARD_FILE])}",
            f"  use:   model, preprocess = tuner.load_model('{result.out_dir}')",
            f"         tuner predict {result.out_dir} IMAGE_OR_FOLDER...",
        ]
    )


# --- loading an export ---------------------------------------------------------------------

Preprocess = Callable[[Any], torch.Tensor]


class LoadedModel(NamedTuple):
    """An exported model ready for inference: ``model, preprocess = load_model(dir)``."""

    model: nn.Module
    preprocess: Preprocess
    class_names: tuple[str, ...]
    config: dict[str, Any]


def load_model(path: str | os.PathLike[str]) -> LoadedModel:
    """Load an export folder: an eval-mode model plus the preprocessing it was trained with.

    ``preprocess`` takes an image file path, a PIL image, a uint8 tensor [3,H,W] or a
    list of those, and returns the normalised float batch the model expects.
    """
    folder = Path(path)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        problem = "not a tuner export" if folder.is_dir() else "no such folder"
        raise TunerError(
            f"{folder}: {problem} (an export has {CONFIG_FILE} and {WEIGHTS_FILE}). Give the "
            "folder that `tuner export-best --out DIR` wrote."
        )
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise TunerError(f"{config_path}: unreadable ({exc}). Export the model again.") from None
    if config.get("weights_sha256") != file_sha256(weights_path):
        raise TunerError(f"{weights_path}: the weights do not match the SHA-256 in {CONFIG_FILE}.")
    model = build_model(config["arch"], config["num_classes"], ResolvedWeights.random_init())
    model.load_state_dict(load_file(str(weights_path)))
    model.eval()
    size = config["image_size"]

    def preprocess(images: Any) -> torch.Tensor:
        items = images if isinstance(images, (list, tuple)) else [images]
        return normalize(torch.stack([fit_square(_as_uint8(item, size), size) for item in items]))

    return LoadedModel(model, preprocess, tuple(config["class_names"]), config)


def _as_uint8(item: Any, size: int) -> torch.Tensor:
    if isinstance(item, torch.Tensor):
        return item
    if isinstance(item, Image.Image):
        return pil_to_tensor(item)
    return load_image_file(Path(item), fit_to=size)
