"""model.py: building ResNets, resolving starting weights, stages and freezing (real torch, CPU)."""

from __future__ import annotations

import argparse
import hashlib
import urllib.request
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torchvision
from torch import nn

from tuner.config import ResolvedWeights, TrainConfig
from tuner.data.prepare import PreparedData
from tuner.engine.model import (
    build_model,
    head_parameters,
    set_frozen,
    set_train_mode,
    stage_modules,
    stage_parameters,
)
from tuner.engine.train import TrainEnvironment, TrainHooks, train
from tuner.engine.weights import resolve_weights
from tuner.errors import TunerError
from tuner.recipe import STAGES, TrialParams

RANDOM = ResolvedWeights(kind="none", name="random init", sha256=None)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty torch hub cache and no network (every download is refused at once); its home."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(urllib.request, "_opener", None)  # rebuilt from the proxy settings above
    return tmp_path / "torch"


@pytest.fixture(scope="module")
def resnet18_state() -> dict[str, torch.Tensor]:
    """A resnet18 state dict with ImageNet's 1000-class fc, as a real weights file would hold."""
    torch.manual_seed(1)
    return torchvision.models.resnet18(num_classes=1000).state_dict()


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    if path.suffix == ".safetensors":
        safetensors.torch.save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def _assert_backbone_equal(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    backbone = [k for k in state if not k.startswith("fc.")]
    assert backbone and all(torch.equal(loaded[k], state[k]) for k in backbone)


# --- architecture and stages ----------------------------------------------------------------


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_build_model_replaces_the_head(arch: str) -> None:
    model = build_model(arch, 7, RANDOM).eval()
    assert model.fc.out_features == 7
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


def test_stages_map_to_the_resnet_modules() -> None:
    model = build_model("resnet18", 3, RANDOM)
    stages = stage_modules(model)
    assert len(stages) == len(STAGES) == 5
    assert list(stages[0].children()) == [model.conv1, model.bn1]
    assert stages[1:] == [model.layer1, model.layer2, model.layer3, model.layer4]
    # every parameter belongs to exactly one stage or the head
    grouped = [p for i in range(len(STAGES)) for p in stage_parameters(model, i)]
    grouped += head_parameters(model)
    assert len(grouped) == len({id(p) for p in grouped}) == len(list(model.parameters()))


@pytest.mark.parametrize("depth", range(6))
def test_set_train_mode_keeps_frozen_batchnorm_in_eval(depth: int) -> None:
    model = build_model("resnet18", 3, RANDOM).eval()
    set_train_mode(model, depth)
    for index, stage in enumerate(stage_modules(model)):
        bns = [m for m in stage.modules() if isinstance(m, nn.BatchNorm2d)]
        assert bns and all(bn.training is (index >= depth) for bn in bns)
    assert model.training and model.fc.training


@pytest.mark.parametrize("depth", range(6))
def test_training_changes_only_unfrozen_stages(depth: int) -> None:
    """One epoch of train(): frozen stages keep weights and BN statistics and get no grads."""
    torch.manual_seed(0)
    model = build_model("resnet18", 2, RANDOM)
    set_frozen(model, depth)
    assert [all(not p.requires_grad for p in stage_parameters(model, i)) for i in range(5)] == [
        i < depth for i in range(5)
    ]
    before = {p: p.detach().clone() for p in model.parameters()}
    stats_before = {
        bn: bn.running_mean.clone() for bn in model.modules() if isinstance(bn, nn.BatchNorm2d)
    }
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    labels = torch.tensor([0, 1] * 4)
    data = PreparedData(
        train_images=images,
        train_labels=labels,
        val_images=images[:4],
        val_labels=labels[:4],
        class_names=("a", "b"),
        fingerprint="random",
        skipped_files=(),
    )
    params = TrialParams(
        freeze_depth=depth,
        unfreeze_epoch=None,
        unfreeze_mode="all",
        head_lr=0.1,
        backbone_lr=0.1 if depth < 5 else None,
        optimizer="sgd",
        batch_size=4,
        weight_decay=1e-4,
    )
    cfg = TrainConfig(epochs=1, lr_schedule="none", device="cpu")
    train(
        model,
        data,
        params,
        cfg,
        TrainEnvironment(torch.device("cpu"), seed=0, augment="none"),
        TrainHooks(),
    )

    for index, stage in enumerate(stage_modules(model)):
        frozen = index < depth
        for p in stage.parameters():
            assert torch.equal(p, before[p]) is frozen
            assert (p.grad is None) is frozen
        for bn in (m for m in stage.modules() if isinstance(m, nn.BatchNorm2d)):
            assert torch.equal(bn.running_mean, stats_before[bn]) is frozen
    assert not any(torch.equal(p, before[p]) for p in head_parameters(model))


# --- starting weights -------------------------------------------------------------------------


def test_none_is_random_init() -> None:
    weights = resolve_weights("resnet18", "none")
    assert weights == RANDOM
    assert weights.describe() == "random init"
    torch.manual_seed(0)
    first = build_model("resnet18", 3, weights)
    torch.manual_seed(1)
    second = build_model("resnet18", 3, weights)
    assert not torch.equal(first.conv1.weight, second.conv1.weight)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_state_dict_file_loads_backbone_with_new_head(
    tmp_path: Path, resnet18_state: dict[str, torch.Tensor], suffix: str
) -> None:
    path = _save(resnet18_state, tmp_path / f"start{suffix}")
    weights = resolve_weights("resnet18", str(path))
    assert (weights.kind, weights.name) == ("file", str(path))
    assert weights.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert weights.fallback_warning is None
    assert ResolvedWeights.from_dict(weights.to_dict()) == weights
    model = build_model("resnet18", 4, weights)
    _assert_backbone_equal(model, resnet18_state)
    assert model.fc.out_features == 4


def test_changed_file_after_resolve_is_refused(
    tmp_path: Path, resnet18_state: dict[str, torch.Tensor]
) -> None:
    path = _save(resnet18_state, tmp_path / "start.safetensors")
    weights = resolve_weights("resnet18", str(path))
    changed = dict(resnet18_state, **{"conv1.weight": resnet18_state["conv1.weight"] + 1})
    _save(changed, path)
    with pytest.raises(TunerError, match="changed since the study recorded it"):
        build_model("resnet18", 4, weights)


@pytest.mark.parametrize("problem", ["missing", "garbage.pt", "garbage.safetensors", "wrong_arch"])
def test_bad_weights_file_names_the_key_and_path(
    tmp_path: Path, resnet18_state: dict[str, torch.Tensor], problem: str
) -> None:
    arch, path = "resnet18", tmp_path / problem
    if problem.startswith("garbage"):
        path.write_bytes(b"not a state dict at all")
    elif problem == "wrong_arch":
        arch, path = "resnet34", _save(resnet18_state, tmp_path / "resnet18.pt")
    with pytest.raises(TunerError) as info:
        resolve_weights(arch, str(path))
    assert "model.weights" in str(info.value) and str(path) in str(info.value)


def test_a_pickle_of_other_objects_is_refused_in_one_line(tmp_path: Path) -> None:
    """torch's page of advice on loading it anyway becomes what the file is and what to do."""
    path = tmp_path / "whole-model.pt"
    torch.save(argparse.Namespace(model="not a state dict"), path)
    with pytest.raises(TunerError) as info:
        resolve_weights("resnet18", str(path))
    said = str(info.value)
    assert "\n" not in said and said.startswith(f"model.weights: {path} is a pickle")
    assert "weights_only=True" in said and "argparse.Namespace" in said
    assert "torch.save(model.state_dict(), path)" in said and "safetensors" in said


def test_imagenet_offline_names_the_expected_cache_file(offline: Path) -> None:
    expected = offline / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(TunerError, match=r"model\.weights") as info:
        resolve_weights("resnet18", "imagenet")
    assert str(expected) in str(info.value)


def test_imagenet_loads_from_the_torch_hub_cache(
    offline: Path, resnet18_state: dict[str, torch.Tensor]
) -> None:
    """A file under the name torchvision's weights URL uses is loaded by the weights API."""
    enum = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    cache = offline / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    path = _save(resnet18_state, cache / Path(enum.url).name)
    weights = resolve_weights("resnet18", "imagenet")
    assert weights == ResolvedWeights(
        kind="imagenet",
        name="ResNet18_Weights.IMAGENET1K_V1",
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
    )
    assert "ResNet18_Weights.IMAGENET1K_V1" in weights.describe()
    _assert_backbone_equal(build_model("resnet18", 5, weights), resnet18_state)


def test_auto_offline_falls_back_to_random_init_loudly(offline: Path) -> None:
    weights = resolve_weights("resnet18", "auto")
    assert (weights.kind, weights.sha256) == ("none", None)
    assert weights.fallback_warning.startswith("WARNING: ImageNet weights for resnet18")
    assert str(offline / "hub" / "checkpoints") in weights.fallback_warning
    assert ResolvedWeights.from_dict(weights.to_dict()) == weights
    assert build_model("resnet18", 2, weights).fc.out_features == 2


def test_unknown_arch_is_a_tuner_error() -> None:
    with pytest.raises(TunerError, match=r"space\.arch"):
        resolve_weights("resnet19", "none")
