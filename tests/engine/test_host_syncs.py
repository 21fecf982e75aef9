"""A training step never waits for the device: no scalar read, no data-dependent shape, no upload.

On CUDA each of these stalls the host until the GPU has caught up, so a step that makes one
cannot queue the next. CPU tensors show the same ops, so a CPU run proves the CUDA one:
every path trains one warm-up epoch (optimizer state, cached features and per-device
constants are built there), then a second epoch is profiled. It may read exactly one number,
its mean loss (which also catches a NaN), whatever its number of steps.

The ops are counted with torch's profiler, not a TorchDispatchMode: with a dispatch mode
active, cross_entropy takes its tensor-subclass branch and hides the masked_select that
class weights with label smoothing make otherwise. Copies to the host that dispatch nothing
on a CPU tensor (``tolist``, ``cpu``, ``numpy``) are counted at the Python call.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable

import pytest
import torch
from torch.autograd.profiler_util import FunctionEvent
from torch.profiler import ProfilerActivity, profile

from tests.engine.test_train import CFG, CPU, PARAMS, _model
from tuner.data.prepare import PreparedData
from tuner.engine.ema import WeightEma
from tuner.engine.features import FeatureCache
from tuner.engine.train import TrainEnvironment, TrainingRun

pytestmark = pytest.mark.usefixtures("one_thread")

SYNCS = (
    "aten::_local_scalar_dense",  # .item(), float(), bool() of a tensor: a device -> host read
    "aten::nonzero",  # an output sized by the data (boolean indexing, torch.nonzero)
    "aten::masked_select",
    "aten::lift_fresh",  # torch.tensor(python data): a host -> device copy
)
HOST_COPIES = ("tolist", "cpu", "numpy")
CPU_KERNELS_ONLY = ("aten::_fused_adam_", "aten::_fused_adamw_", "aten::_fused_sgd_")
"""Ops whose CPU kernels read each parameter's step count; their CUDA kernels take it on the
device, so the reads inside them are no sync there."""
ONE_LOSS_READ = Counter({"aten::_local_scalar_dense": 1})

PATHS = {
    "resident images": ({"augment": "crop_flip_jitter"}, {}),
    "streamed images": ({"augment": "crop_flip_jitter", "resident": False}, {}),
    "cached features": ({"augment": "flip", "feature_cache": True}, {"freeze_depth": 3}),
    "frozen prefix": ({"augment": "crop_flip", "feature_cache": True}, {"freeze_depth": 3}),
    "ema": ({"augment": "flip"}, {"ema": 0.9}),
    "mixup": ({"augment": "flip"}, {"mixup": 0.4, "optimizer": "sgd"}),
    "cutmix": ({"augment": "flip"}, {"cutmix": 1.0, "optimizer": "adamw"}),
    "weighted smoothing": ({"augment": "flip", "weights": True}, {"label_smoothing": 0.1}),
    "all at once": (
        {"augment": "crop_flip", "resident": False, "feature_cache": True, "weights": True},
        {"freeze_depth": 2, "label_smoothing": 0.1, "mixup": 0.3, "cutmix": 1.0, "ema": 0.9},
    ),
}


def _run(data: PreparedData, env: dict, params: dict) -> TrainingRun:
    environment = TrainEnvironment(
        CPU,
        seed=0,
        augment=env["augment"],
        class_weights=torch.tensor([0.3, 1.7]) if env.get("weights") else None,
        feature_cache=FeatureCache() if env.get("feature_cache") else None,
        resident=env.get("resident", True),
    )
    trial = dataclasses.replace(PARAMS, **params)
    cfg = dataclasses.replace(CFG, epochs=2, grad_clip=1.0)
    return TrainingRun(_model(), data, trial, cfg, environment)


def _host_syncs(run: TrainingRun, epoch: int) -> Counter[str]:
    """The syncs of ``run``'s epoch ``epoch`` (without validation), by op or method name."""
    copies: Counter[str] = Counter()
    with pytest.MonkeyPatch.context() as patch:
        for name in HOST_COPIES:
            patch.setattr(torch.Tensor, name, _counted(getattr(torch.Tensor, name), copies))
        with profile(activities=[ProfilerActivity.CPU]) as profiled:
            run.run_epoch(epoch, validate=False)
    syncs = Counter(e.name for e in profiled.events() if e.name in SYNCS and _on_cuda_too(e))
    return syncs + copies


def _counted(method: Callable[..., object], calls: Counter[str]) -> Callable[..., object]:
    def counting(*args: object, **kwargs: object) -> object:
        calls[method.__name__] += 1
        return method(*args, **kwargs)

    return counting


def _on_cuda_too(event: FunctionEvent) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name in CPU_KERNELS_ONLY:
            return False
        parent = parent.cpu_parent
    return True


@pytest.mark.parametrize(("env", "params"), PATHS.values(), ids=PATHS.keys())
def test_a_training_epoch_reads_the_device_once(toy: PreparedData, env: dict, params: dict) -> None:
    run = _run(toy, env, params)
    run.run_epoch(0, validate=False)
    steps = len(toy.train_labels) // PARAMS.batch_size
    assert steps > 1  # a read in every step would show as more than one
    assert _host_syncs(run, 1) == ONE_LOSS_READ


def test_a_weight_average_update_is_two_foreach_calls() -> None:
    """Not a walk over the state dict (hundreds of small ops per step for a ResNet-50)."""
    model = _model()
    ema = WeightEma(model, 0.9)
    with profile(activities=[ProfilerActivity.CPU]) as profiled:
        ema.update(model)
    ops = [event.name for event in profiled.events() if event.cpu_parent is None]
    assert ops == ["aten::_foreach_lerp_", "aten::_foreach_copy_"]
