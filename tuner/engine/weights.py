"""Starting weights: resolved once per study into a record, loaded and verified by every worker.

Weights are resolved once, when a study is created, into a ResolvedWeights record (what was
loaded and the sha256 of the file it came from). Every worker rebuilds the model from that
record and refuses to start from anything else, so all trials of a study share one start.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import safetensors.torch
import torch
import torchvision
from torch import Tensor, nn

from tuner.config import ARCHS, PinnedWeights, ResolvedWeights
from tuner.errors import TunerError

_WEIGHT_SPECS = "auto, imagenet, none or the path of a state-dict file"

# sha256 of a weights file -> its state dict: resolve then build reads and decodes a file once.
_loaded: dict[str, dict[str, Tensor]] = {}


def resolve_weights(arch: str, spec: str) -> ResolvedWeights:
    """Turn ``model.weights`` into a record of exactly what will be loaded.

    ``imagenet`` uses torchvision's default weights for ``arch`` from the torch hub cache
    (downloading them if missing); ``auto`` does the same but falls back to random init with a
    ``fallback_warning`` when they cannot be had; ``none`` is random init; anything else is the
    path of a state-dict file (.safetensors, else a torch.save file). Raises TunerError when
    the weights cannot be loaded or do not fit ``arch``.
    """
    check_arch(arch)
    if spec == "none":
        return ResolvedWeights.random_init()
    if spec in ("imagenet", "auto"):
        weights = torchvision.models.get_model_weights(arch).DEFAULT
        try:
            sha = _load_imagenet(arch, weights)[1]
        except TunerError as exc:
            if spec == "imagenet":
                raise
            warning = (
                f"WARNING: ImageNet weights for {arch} could not be loaded; training from random "
                f"init, which usually scores far lower. {exc}"
            )
            return ResolvedWeights(
                kind="none", name="random init", sha256=None, fallback_warning=warning
            )
        return ResolvedWeights(kind="imagenet", name=str(weights), sha256=sha)
    path = Path(spec).expanduser().absolute()
    state, sha = _load_file(path)
    _check_fits(_meta_model(arch).state_dict(), state, arch, path)
    return ResolvedWeights(kind="file", name=str(path), sha256=sha)


def resolve_study_weights(archs: tuple[str, ...], spec: str) -> PinnedWeights:
    """:func:`resolve_weights` for every arch a study may build; a file fits one arch only."""
    if len(archs) > 1 and spec not in ("auto", "imagenet", "none"):
        raise TunerError(
            f"model.weights: the file {spec} fits one architecture, and space.arch chooses among "
            f"{', '.join(archs)}; fix space.arch to the file's, or use imagenet"
        )
    return PinnedWeights(tuple((arch, resolve_weights(arch, spec)) for arch in archs))


def backbone_state(
    weights: ResolvedWeights, arch: str, expected: dict[str, Tensor]
) -> dict[str, Tensor]:
    """The recorded weights' backbone tensors, checked against their sha256 and ``expected``.

    ``expected`` is the state dict of the model they go into (the head is ignored on both sides).
    """
    if weights.kind == "imagenet":
        enum = torchvision.models.get_weight(weights.name)
        path = _hub_path(enum)
        state, sha = _load_imagenet(arch, enum)
    else:
        path = Path(weights.name)
        state, sha = _load_file(path)
    if sha != weights.sha256:
        raise TunerError(
            f"model.weights: {path} changed since the study recorded it (sha256 "
            f"{weights.sha256} then, {sha} now); restore that file or create a new study"
        )
    _check_fits(expected, state, arch, path)
    return _backbone(state)


def check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise TunerError(
            f"space.arch: unknown architecture {arch!r}; use one of {', '.join(ARCHS)}"
        )


def _hub_path(weights: torchvision.models.WeightsEnum) -> Path:
    """Where torch hub keeps (or would download) these weights: $TORCH_HOME/hub/checkpoints."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def _load_imagenet(arch: str, weights: torchvision.models.WeightsEnum) -> tuple[dict, str]:
    """Load through torchvision's weights API (hub cache, else download); (state dict, sha256)."""
    path = _hub_path(weights)
    sha = file_sha256(path) if path.is_file() else None
    if sha not in _loaded:
        try:
            state = weights.get_state_dict(progress=False, weights_only=True)
        except Exception as exc:
            raise TunerError(
                f"model.weights: ImageNet weights for {arch} ({weights}) are not in the torch hub "
                f"cache ({path}) and could not be downloaded ({exc}); put {path.name} there (from "
                f"{weights.url}), or set model.weights: none or the path of a state-dict file"
            ) from exc
        sha = sha or file_sha256(path)
        _loaded[sha] = state
    return _loaded[sha], sha


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in chunks (checkpoints can be hundreds of MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_file(path: Path) -> tuple[dict[str, Tensor], str]:
    """Read a state-dict file (.safetensors, else torch.save); (state dict, sha256)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TunerError(
            f"model.weights: cannot read {path} ({exc.strerror}); give {_WEIGHT_SPECS}"
        ) from exc
    sha = hashlib.sha256(raw).hexdigest()
    if sha in _loaded:
        return _loaded[sha], sha
    try:
        if path.suffix == ".safetensors":
            state = safetensors.torch.load(raw)
        else:
            state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TunerError(_unreadable(path, exc)) from exc
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise TunerError(
            f"model.weights: {path} holds a {type(state).__name__}, not a state dict of tensors; "
            "save model.state_dict() itself"
        )
    _loaded[sha] = state
    return state, sha


def _unreadable(path: Path, exc: Exception) -> str:
    """One line on a weights file torch or safetensors cannot read, and how to save one.

    torch's refusal of a pickle that holds more than tensors is a page of advice on loading
    it anyway; a study must not run code from a file, so the line says only what it holds.
    """
    save = (
        "save the weights with torch.save(model.state_dict(), path), or as safetensors with "
        "safetensors.torch.save_file(model.state_dict(), path)"
    )
    said = str(exc)
    if "Weights only load failed" in said:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", said)
        holds = f"it holds {found.group(1)}" if found else "it holds Python objects"
        return (
            f"model.weights: {path} is a pickle that torch.load(weights_only=True) refuses "
            f"({holds}), not a plain state dict of tensors; {save}"
        )
    first = said.strip().splitlines()[0] if said.strip() else type(exc).__name__
    return f"model.weights: {path} is not a readable state-dict file ({first}); {save}"


def _meta_model(arch: str) -> nn.Module:
    """The architecture without memory or init cost, to check a state dict against."""
    with torch.device("meta"):
        return torchvision.models.get_model(arch, weights=None)


def _backbone(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def _check_fits(
    expected: dict[str, Tensor], state: dict[str, Tensor], arch: str, path: Path
) -> None:
    """Raise TunerError unless ``state`` has exactly the backbone keys and shapes of ``expected``.

    ``fc`` entries are ignored on both sides: the head is always replaced.
    """
    expected, state = _backbone(expected), _backbone(state)
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    misshapen = sorted(
        k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape
    )
    if missing or unexpected or misshapen:
        problems = [
            f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", misshapen),
            )
            if keys
        ]
        raise TunerError(
            f"model.weights: {path} does not fit {arch} ({'; '.join(problems)}); use a state dict "
            f"saved from a torchvision {arch}, or set space.arch to the architecture it came from"
        )
