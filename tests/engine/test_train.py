"""train.py: the fine-tuning loop on a tiny learnable task (real torch on CPU, resnet18, 16x16)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from tuner.config import ResolvedWeights, TrainConfig
from tuner.data.prepare import PreparedData
from tuner.engine.device import resolve_device
from tuner.engine.evaluate import evaluate
from tuner.engine.features import FeatureCache
from tuner.engine.model import build_model
from tuner.engine.optim import lr_factor
from tuner.engine.records import EpochMetrics, NonFiniteLossError, TrainCheckpoint, TrainResult
from tuner.engine.train import TrainEnvironment, TrainHooks, restore_generator, train
from tuner.errors import TunerError
from tuner.recipe import TrialParams

CPU = torch.device("cpu")
RANDOM = ResolvedWeights(kind="none", name="random init", sha256=None)
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
CFG = TrainConfig(epochs=3, lr_schedule="cosine", device="cpu", eval_batch_size=32)


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("resnet18", 2, RANDOM)


def _run(
    data: PreparedData,
    params: TrialParams = PARAMS,
    cfg: TrainConfig = CFG,
    *,
    model: nn.Module | None = None,
    augment: str = "flip",
    class_weights: torch.Tensor | None = None,
    seed: int = 0,
    on_epoch=lambda metrics: False,
    on_checkpoint=None,
    feature_cache: FeatureCache | None = None,
    resume: TrainCheckpoint | None = None,
) -> TrainResult:
    env = TrainEnvironment(CPU, seed, augment, class_weights, feature_cache)
    return train(
        model if model is not None else _model(),
        data,
        params,
        cfg,
        env,
        TrainHooks(on_epoch, on_checkpoint),
        resume=resume,
    )


@dataclasses.dataclass
class _Step:
    optimizer: torch.optim.Optimizer
    stages: list[str]
    lrs: list[float]
    head_state: dict[str, torch.Tensor]
    head_steps: float  # the head's Adam step count as it was at this step (nan for SGD)
    grad_norm: float


@pytest.fixture
def steps() -> Iterator[list[_Step]]:
    """Every optimizer step taken during the test, seen through torch's global step hook."""
    seen: list[_Step] = []

    def record(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        head = optimizer.param_groups[0]["params"][0]
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        seen.append(
            _Step(
                optimizer=optimizer,
                stages=list(dict.fromkeys(g["stage"] for g in optimizer.param_groups)),
                lrs=list({g["stage"]: g["lr"] for g in optimizer.param_groups}.values()),
                head_state=dict(optimizer.state[head]),
                head_steps=float(optimizer.state[head].get("step", math.nan)),
                grad_norm=float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))),
            )
        )

    handle = register_optimizer_step_post_hook(record)
    yield seen
    handle.remove()


def _without_time(history: tuple[EpochMetrics, ...]) -> list[EpochMetrics]:
    return [dataclasses.replace(m, seconds=0.0) for m in history]


# --- schedules --------------------------------------------------------------------------------


def test_lr_factor() -> None:
    assert [lr_factor("none", e, 4, 2, 0.1) for e in range(4)] == [1.0] * 4
    cosine = [lr_factor("cosine", e, 4, 2, 0.1) for e in range(4)]
    assert cosine == pytest.approx([1.0, (1 + math.sqrt(0.5)) / 2, 0.5, (1 - math.sqrt(0.5)) / 2])
    step = [lr_factor("step", e, 5, 2, 0.1) for e in range(5)]
    assert step == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])
    with pytest.raises(ValueError):
        lr_factor("linear", 0, 4, 2, 0.1)


# --- the optimizer across unfreezing ----------------------------------------------------------


@pytest.mark.parametrize(
    ("optimizer", "state_key"), [("sgd", "momentum_buffer"), ("adam", "exp_avg")]
)
def test_unfreeze_all_adds_groups_and_keeps_head_state(
    toy: PreparedData, steps: list[_Step], optimizer: str, state_key: str
) -> None:
    params = dataclasses.replace(
        PARAMS, freeze_depth=3, unfreeze_epoch=1, optimizer=optimizer, head_lr=0.01
    )
    result = _run(toy, params)
    per_epoch = len(steps) // 3
    assert len(steps) == 3 * per_epoch == 3 * 4  # 64 images in batches of 16
    assert [m.frozen_depth for m in result.history] == [3, 0, 0]
    assert len({id(s.optimizer) for s in steps}) == 1  # created once, never rebuilt
    assert steps[0].stages == ["head", "layer4", "layer3"]
    assert steps[per_epoch].stages == ["head", "layer4", "layer3", "layer2", "layer1", "stem"]
    # the head's state tensor is created on the first step and updated in place ever after
    assert len({id(s.head_state[state_key]) for s in steps}) == 1
    if optimizer == "adam":
        assert [s.head_steps for s in steps] == list(range(1, len(steps) + 1))


def test_progressive_unfreeze_one_stage_per_epoch(toy: PreparedData, steps: list[_Step]) -> None:
    params = dataclasses.replace(
        PARAMS, freeze_depth=3, unfreeze_epoch=2, unfreeze_mode="progressive"
    )
    result = _run(toy, params, dataclasses.replace(CFG, epochs=4))
    assert [m.frozen_depth for m in result.history] == [3, 3, 2, 1]
    assert [s.stages for s in steps[::4]] == [
        ["head", "layer4", "layer3"],
        ["head", "layer4", "layer3"],
        ["head", "layer4", "layer3", "layer2"],
        ["head", "layer4", "layer3", "layer2", "layer1"],
    ]


def test_group_lrs_follow_the_schedule(toy: PreparedData, steps: list[_Step]) -> None:
    params = dataclasses.replace(
        PARAMS, freeze_depth=4, unfreeze_epoch=2, head_lr=0.02, backbone_lr=0.002
    )
    cfg = dataclasses.replace(
        CFG, epochs=4, lr_schedule="step", lr_step_epochs=1, lr_step_gamma=0.5
    )
    result = _run(toy, params, cfg)
    assert [m.head_lr for m in result.history] == pytest.approx([0.02, 0.01, 0.005, 0.0025])
    assert steps[0].lrs == pytest.approx([0.02, 0.002])
    assert steps[-1].lrs == pytest.approx([0.0025] + [0.00025] * 5)


def test_grad_clip_bounds_the_gradient_norm(toy: PreparedData, steps: list[_Step]) -> None:
    _run(toy, cfg=dataclasses.replace(CFG, epochs=1, grad_clip=0.05))
    assert steps and all(s.grad_norm <= 0.05 * 1.001 for s in steps)


# --- failure and stopping ---------------------------------------------------------------------


def test_absurd_learning_rate_raises_non_finite_loss(toy: PreparedData) -> None:
    params = dataclasses.replace(PARAMS, optimizer="sgd", head_lr=1e12, backbone_lr=1e12)
    with pytest.raises(NonFiniteLossError) as info:
        _run(toy, params, dataclasses.replace(CFG, epochs=5))
    assert info.value.epoch >= 0 and f"epoch {info.value.epoch}" in str(info.value)


def test_nan_loss_raises_at_the_first_step(toy: PreparedData) -> None:
    with pytest.raises(NonFiniteLossError) as info:
        _run(toy, class_weights=torch.tensor([math.nan, 1.0]))
    assert (info.value.epoch, info.value.step) == (0, 0)


def test_on_epoch_can_stop_the_run(toy: PreparedData) -> None:
    seen: list[EpochMetrics] = []

    def stop_after_second(metrics: EpochMetrics) -> bool:
        seen.append(metrics)
        return metrics.epoch == 1

    result = _run(toy, on_epoch=stop_after_second)
    assert result.stopped_early
    assert [m.epoch for m in result.history] == [0, 1]
    assert list(result.history) == seen


def test_a_final_batch_of_one_image_is_dropped(toy: PreparedData, steps: list[_Step]) -> None:
    nine = dataclasses.replace(
        toy, train_images=toy.train_images[:9], train_labels=toy.train_labels[:9]
    )
    params = dataclasses.replace(PARAMS, batch_size=4)
    _run(nine, params, dataclasses.replace(CFG, epochs=1))
    assert len(steps) == 2


# --- determinism and learning -----------------------------------------------------------------


def test_same_seed_same_run(toy: PreparedData) -> None:
    first, second, other = (
        _run(toy, model=_model(), augment="crop_flip_jitter", seed=seed) for seed in (3, 3, 4)
    )
    assert _without_time(first.history) == _without_time(second.history)
    assert first.best_state.keys() == second.best_state.keys()
    assert all(torch.equal(first.best_state[k], second.best_state[k]) for k in first.best_state)
    assert [m.train_loss for m in first.history] != [m.train_loss for m in other.history]


@pytest.mark.parametrize(
    ("optimizer", "augment", "cached"),
    [
        ("adam", "crop_flip_jitter", False),
        ("sgd", "crop_flip_jitter", False),
        ("adam", "flip", True),
    ],
)
def test_a_resumed_run_equals_the_uninterrupted_one(
    toy: PreparedData, optimizer: str, augment: str, cached: bool
) -> None:
    """Stopped after epoch 1 (a killed worker), resumed in a fresh model from its checkpoint.

    Progressive unfreezing from epoch 1 changes the optimizer's group layout before and after
    the checkpoint, and crop/flip/jitter draws from the augmentation generator, so both must
    come back exactly for the runs to match bitwise. With ``cached``, every run is a worker of
    its own with its own feature cache, as after a crash.
    """
    params = dataclasses.replace(
        PARAMS, freeze_depth=3, unfreeze_epoch=1, unfreeze_mode="progressive", optimizer=optimizer
    )
    cfg = dataclasses.replace(CFG, epochs=4)
    run = {"params": params, "cfg": cfg, "augment": augment, "seed": 5}
    if cached:
        run["feature_cache"] = None  # replaced per run below
    whole = _run(toy, model=_model(), **_fresh_cache(run))

    saved: list[bytes] = []
    _run(
        toy,
        model=_model(),
        on_epoch=lambda metrics: metrics.epoch == 2,  # the worker dies during epoch 2
        on_checkpoint=lambda checkpoint: saved.append(checkpoint.to_bytes()),
        **_fresh_cache(run),
    )
    assert len(saved) == 2  # after epochs 0 and 1; a stopped run writes no checkpoint
    checkpoint = TrainCheckpoint.from_bytes(saved[-1])
    assert checkpoint.epoch == 1
    resumed = _run(toy, model=_model(seed=99), resume=checkpoint, **_fresh_cache(run))

    assert _without_time(resumed.history) == _without_time(whole.history)
    assert resumed.best_epoch == whole.best_epoch
    assert all(torch.equal(resumed.best_state[k], whole.best_state[k]) for k in whole.best_state)
    assert torch.equal(resumed.best_predictions, whole.best_predictions)


def _fresh_cache(run: dict) -> dict:
    """``run`` with a new, empty feature cache where it asks for one."""
    return {**run, "feature_cache": FeatureCache()} if "feature_cache" in run else run


def test_learns_the_toy_task_and_keeps_the_best_epoch(toy: PreparedData) -> None:
    result = _run(toy)
    accuracies = [m.val_accuracy for m in result.history]
    assert result.best_accuracy == max(accuracies) >= 0.9  # chance is 0.5
    assert result.best_epoch == accuracies.index(result.best_accuracy)
    assert not result.stopped_early
    assert all(m.train_loss > 0 and m.seconds > 0 for m in result.history)
    # best_state is a CPU snapshot that reproduces the best epoch's accuracy
    assert all(t.device == CPU for t in result.best_state.values())
    restored = _model(seed=9)
    restored.load_state_dict(result.best_state)
    accuracy, predictions = evaluate(restored, toy.val_images, toy.val_labels, CPU, 32)
    assert accuracy == result.best_accuracy
    assert torch.equal(predictions, result.best_predictions)  # the best epoch's, kept


def test_evaluate_matches_its_predictions(toy: PreparedData) -> None:
    model = _model().train()
    accuracy, predictions = evaluate(model, toy.val_images, toy.val_labels, CPU, batch_size=7)
    assert not model.training
    assert predictions.shape == toy.val_labels.shape and predictions.device == CPU
    assert accuracy == pytest.approx((predictions == toy.val_labels).float().mean().item())
    _, one_batch = evaluate(model, toy.val_images, toy.val_labels, CPU, batch_size=64)
    assert torch.equal(predictions, one_batch)


# --- settings ---------------------------------------------------------------------------------


def test_resolve_device() -> None:
    assert resolve_device("cpu") == CPU
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    for bad in ("gpu", "tpu", "cuda:99"):
        with pytest.raises(TunerError, match=r"train\.device"):
            resolve_device(bad)


def test_unknown_amp_is_a_tuner_error(toy: PreparedData) -> None:
    with pytest.raises(TunerError, match=r"train\.amp"):
        _run(toy, cfg=dataclasses.replace(CFG, amp="fp8"))


def test_a_checkpoint_from_a_gpu_resumes_on_the_cpu(toy: PreparedData) -> None:
    """A retry that lands on another kind of device: a CUDA generator's 16-byte state cannot
    load into a CPU generator, so the run reseeds its augmentation and goes on to the end."""
    params = dataclasses.replace(PARAMS, freeze_depth=3, unfreeze_epoch=1)
    saved: list[TrainCheckpoint] = []
    _run(toy, params, augment="crop_flip", on_checkpoint=saved.append,
         on_epoch=lambda metrics: metrics.epoch == 1)  # fmt: skip
    from_gpu = dataclasses.replace(saved[0], augment_rng_state=torch.zeros(16, dtype=torch.uint8))

    resumed = _run(toy, params, augment="crop_flip", model=_model(seed=9), resume=from_gpu)

    assert [m.epoch for m in resumed.history] == [0, 1, 2]
    assert all(math.isfinite(m.val_accuracy) for m in resumed.history)


def test_restore_generator_loads_a_state_of_its_own_kind_and_reseeds_otherwise() -> None:
    generator = torch.Generator().manual_seed(3)
    torch.rand(5, generator=generator)
    state = generator.get_state()
    expected = torch.rand(4, generator=generator)

    assert restore_generator(generator, state, epoch=0)
    assert torch.equal(torch.rand(4, generator=generator), expected)
    assert not restore_generator(generator, torch.zeros(16, dtype=torch.uint8), epoch=2)
    assert torch.equal(
        torch.rand(4, generator=generator),
        torch.rand(4, generator=torch.Generator().manual_seed(6)),
    )
