"""The recipe dimensions beyond freezing and rates change what trains the way they say.

Real torch on CPU: a resnet18 on the 16x16 toy task, its optimizer's groups, its BatchNorm
statistics, its weight average and its mixed batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from tuner.config import ResolvedWeights, TrainConfig
from tuner.data import Mixing, mix_batch
from tuner.data.prepare import PreparedData
from tuner.engine.ema import WeightEma
from tuner.engine.evaluate import evaluate
from tuner.engine.features import FeatureCache
from tuner.engine.model import build_model
from tuner.engine.optim import make_optimizer, unfreeze, warmup_factor
from tuner.engine.records import TrainCheckpoint, TrainResult
from tuner.engine.train import TrainEnvironment, TrainHooks, train
from tuner.recipe import STAGES, TrialParams, describe_schedule

CPU = torch.device("cpu")
RANDOM = ResolvedWeights.random_init()
PARAMS = TrialParams(
    freeze_depth=0,
    unfreeze_epoch=None,
    unfreeze_mode="all",
    head_lr=1e-3,
    backbone_lr=1e-3,
    optimizer="adam",
    batch_size=16,
    weight_decay=1e-4,
)
CFG = TrainConfig(epochs=2, lr_schedule="none", device="cpu", eval_batch_size=32)

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("resnet18", 2, RANDOM)


def _run(
    data: PreparedData,
    params: TrialParams,
    cfg: TrainConfig = CFG,
    *,
    model: nn.Module | None = None,
    seed: int = 0,
    feature_cache: FeatureCache | None = None,
    on_epoch=lambda metrics: False,
    on_checkpoint=None,
    resume: TrainCheckpoint | None = None,
) -> TrainResult:
    env = TrainEnvironment(CPU, seed, "flip", None, feature_cache)
    hooks = TrainHooks(on_epoch, on_checkpoint)
    return train(model or _model(), data, params, cfg, env, hooks, resume=resume)


@pytest.fixture
def stage_lrs() -> Iterator[list[dict[str, float]]]:
    """Each optimizer step's learning rate per stage (its weights' group)."""
    seen: list[dict[str, float]] = []

    def record(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        seen.append({g["stage"]: g["lr"] for g in optimizer.param_groups if g["weight_decay"]})

    handle = register_optimizer_step_post_hook(record)
    yield seen
    handle.remove()


# --- layer decay and warm-up --------------------------------------------------------------


def test_layer_decay_gives_each_stage_its_power_of_the_backbone_rate() -> None:
    params = dataclasses.replace(PARAMS, head_lr=0.1, backbone_lr=0.01, layer_decay=0.5)
    model = _model()
    optimizer = make_optimizer(model, params, frozen_depth=3)
    unfreeze(model, optimizer, params, depth=3, new=0, epoch=1)
    rates = {g["stage"]: g["base_lr"] for g in optimizer.param_groups}
    expected = {stage: 0.01 * 0.5 ** (len(STAGES) - 1 - i) for i, stage in enumerate(STAGES)}
    assert rates == pytest.approx({"head": 0.1, **expected})
    assert rates["layer4"] == 0.01 and rates["stem"] == pytest.approx(0.01 / 16)


def test_warmup_ramps_every_group_from_the_epoch_it_starts_training(
    toy: PreparedData, stage_lrs: list[dict[str, float]]
) -> None:
    params = dataclasses.replace(
        PARAMS, freeze_depth=4, unfreeze_epoch=2, head_lr=0.03, backbone_lr=0.003,
        warmup_epochs=2,
    )  # fmt: skip
    result = _run(toy, params, dataclasses.replace(CFG, epochs=4))
    ramp = [1 / 3, 2 / 3, 1.0, 1.0]
    assert [m.head_lr for m in result.history] == pytest.approx([0.03 * f for f in ramp])
    per_epoch = len(stage_lrs) // 4
    first_steps = stage_lrs[::per_epoch]
    assert [s["layer4"] for s in first_steps] == pytest.approx([0.003 * f for f in ramp])
    assert "layer3" not in first_steps[1]
    assert [s["stem"] for s in first_steps[2:]] == pytest.approx([0.003 / 3, 0.003 * 2 / 3])
    assert [warmup_factor(e, 0) for e in range(3)] == [1.0, 1.0, 1.0]


# --- label smoothing, BatchNorm policy ----------------------------------------------------


def test_label_smoothing_raises_the_loss_of_the_same_predictions(toy: PreparedData) -> None:
    one = dataclasses.replace(CFG, epochs=1)
    plain = _run(toy, PARAMS, one)
    smoothed = _run(toy, dataclasses.replace(PARAMS, label_smoothing=0.3), one)
    assert smoothed.history[0].train_loss > plain.history[0].train_loss


def _batchnorm_stats(model: nn.Module) -> dict[str, torch.Tensor]:
    stats = ("running_mean", "running_var")
    return {k: v.clone() for k, v in model.state_dict().items() if k.endswith(stats)}


@pytest.mark.parametrize("policy", ["train", "freeze_stats"])
def test_batchnorm_statistics_stay_pretrained_only_under_freeze_stats(
    toy: PreparedData, policy: str
) -> None:
    model = _model()
    before = _batchnorm_stats(model)
    scale_before = model.layer4[0].bn1.weight.detach().clone()
    _run(toy, dataclasses.replace(PARAMS, bn_policy=policy), model=model)
    after = _batchnorm_stats(model)
    unchanged = [torch.equal(before[k], after[k]) for k in before]
    assert all(unchanged) == (policy == "freeze_stats")
    assert not any(unchanged) or policy == "freeze_stats"
    assert not torch.equal(model.layer4[0].bn1.weight, scale_before)  # the scale still learns


# --- the weight average -------------------------------------------------------------------


def test_the_weight_average_moves_by_its_warmed_up_decay() -> None:
    model = nn.Linear(3, 2)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    ema = WeightEma(model, decay=0.999)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    decay = 2 / 11  # min(0.999, (1 + 1) / (10 + 1)) after one update
    assert torch.allclose(ema.shadow["weight"], start["weight"] + (1 - decay))
    assert torch.equal(ema.shadow["bias"], start["bias"])
    with ema.applied(model):
        assert torch.equal(model.weight, ema.shadow["weight"])
    assert torch.equal(model.weight, start["weight"] + 1.0)  # its own weights are back


def test_the_weight_average_follows_its_model_after_applied_and_a_reload() -> None:
    """Its tensors are paired with the model's once: every write to either must keep them."""
    model = nn.Linear(3, 2)
    ema = WeightEma(model, decay=0.5)
    saved = {k: v.clone() for k, v in ema.state_dict()["shadow"].items()}
    with ema.applied(model):
        pass
    ema.load_state_dict({"updates": 0, "shadow": saved})
    with torch.no_grad():
        model.weight.fill_(2.0)
    ema.update(model)
    decay = 2 / 11
    assert torch.allclose(ema.shadow["weight"], decay * saved["weight"] + (1 - decay) * 2.0)
    with pytest.raises(ValueError, match="another model"):
        ema.update(nn.Linear(3, 2))


def test_with_ema_the_average_is_validated_and_kept_as_the_best(toy: PreparedData) -> None:
    model = _model()
    cfg = dataclasses.replace(CFG, epochs=1)
    result = _run(toy, dataclasses.replace(PARAMS, ema=0.9), cfg, model=model)
    raw = model.state_dict()
    assert any(not torch.equal(result.best_state[k], raw[k]) for k in raw)
    average = _model(seed=7)
    average.load_state_dict(result.best_state)
    accuracy, predictions = evaluate(average, toy.val_images, toy.val_labels, CPU, 32)
    assert accuracy == result.best_accuracy
    assert torch.equal(predictions, result.best_predictions)


# --- mixup and cutmix ---------------------------------------------------------------------


def _mixed(mixing: Mixing, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(8) % mixing.num_classes
    generator, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    return mix_batch(images, labels, mixing, generator, rng)


@pytest.mark.parametrize(
    "mixing", [Mixing(0.4, 0.0, 4), Mixing(0.0, 1.0, 4), Mixing(0.4, 1.0, 4)], ids=str
)
def test_mixing_is_seeded_and_its_targets_are_probabilities(mixing: Mixing) -> None:
    first, second, other = _mixed(mixing, 3), _mixed(mixing, 3), _mixed(mixing, 4)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], other[0])
    assert torch.allclose(first[1].sum(1), torch.ones(8))
    assert first[1].min() >= 0


def test_cutmix_pastes_a_box_and_weighs_the_targets_by_its_area() -> None:
    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(8)
    mixing = Mixing(0.0, 1.0, 8)
    mixed, targets = mix_batch(images, labels, mixing, torch.Generator(), np.random.default_rng(0))
    kept = (mixed == images).all(1).float().mean((1, 2))  # each image's share of its pixels
    assert 0 < kept.min() < 1  # a box came from another image (an image its own partner keeps all)
    assert torch.allclose(targets.diagonal(), kept)


def test_mixup_blends_images_and_targets_alike() -> None:
    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(8)
    mixing = Mixing(0.4, 0.0, 8)
    mixed, targets = mix_batch(images, labels, mixing, torch.Generator(), np.random.default_rng(0))
    lam = targets.diagonal()[0]
    partner = targets[0].clone()
    partner[0] = 0
    other = int(partner.argmax()) if partner.max() > 0 else 0
    assert torch.allclose(mixed[0], lam * images[0] + (1 - lam) * images[other], atol=1e-6)


def test_mixed_runs_feed_images_not_cached_training_features(toy: PreparedData) -> None:
    cache = FeatureCache()
    params = dataclasses.replace(PARAMS, freeze_depth=5, backbone_lr=None, mixup=0.4)
    _run(toy, params, feature_cache=cache)
    assert {key.split for key in cache._entries} == {"val"}


# --- all of them, resumed ------------------------------------------------------------------


def test_a_resumed_run_with_every_dimension_equals_the_uninterrupted_one(
    toy: PreparedData,
) -> None:
    params = dataclasses.replace(
        PARAMS, freeze_depth=3, unfreeze_epoch=1, layer_decay=0.6, warmup_epochs=1,
        label_smoothing=0.1, mixup=0.3, cutmix=1.0, ema=0.9, bn_policy="freeze_stats",
    )  # fmt: skip
    cfg = dataclasses.replace(CFG, epochs=3, lr_schedule="cosine")
    whole = _run(toy, params, cfg, seed=4)
    saved: list[bytes] = []
    _run(
        toy, params, cfg, seed=4,
        on_epoch=lambda metrics: metrics.epoch == 1,
        on_checkpoint=lambda checkpoint: saved.append(checkpoint.to_bytes()),
    )  # fmt: skip
    checkpoint = TrainCheckpoint.from_bytes(saved[-1])
    assert checkpoint.epoch == 0 and checkpoint.ema_state is not None
    resumed = _run(toy, params, cfg, model=_model(seed=99), seed=4, resume=checkpoint)
    assert [m.val_accuracy for m in resumed.history] == [m.val_accuracy for m in whole.history]
    assert [m.train_loss for m in resumed.history] == [m.train_loss for m in whole.history]
    assert all(torch.equal(resumed.best_state[k], whole.best_state[k]) for k in whole.best_state)


def test_the_recipe_says_its_dimensions_in_words() -> None:
    params = dataclasses.replace(
        PARAMS, layer_decay=0.7, warmup_epochs=1, label_smoothing=0.1, mixup=0.2, cutmix=1.0,
        ema=0.999, bn_policy="freeze_stats",
    )  # fmt: skip
    text = describe_schedule(params, 4)
    for words in (
        "layer decay 0.7", "1-epoch warm-up", "label smoothing 0.1", "mixup 0.2", "cutmix 1",
        "EMA 0.999", "BatchNorm statistics kept pretrained",
    ):  # fmt: skip
        assert words in text
    assert describe_schedule(PARAMS, 4).endswith("weight decay 1e-4")
