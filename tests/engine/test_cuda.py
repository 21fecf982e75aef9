"""The CUDA paths (bench/gpu_check.sh runs these on a GPU machine; skipped without one)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.engine.test_train import CFG, PARAMS, _model
from tuner.config import TrainConfig
from tuner.data.prepare import PreparedData
from tuner.engine.features import FeatureCache
from tuner.engine.placement import choose_placement, free_bytes
from tuner.engine.train import TrainEnvironment, TrainHooks, train
from tuner.engine.transfer import ResidentImages, StreamedImages

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
GPU = torch.device("cuda")


def test_streamed_batches_arrive_on_the_gpu_equal_to_the_resident_ones() -> None:
    images = torch.randint(0, 256, (300, 3, 32, 32), dtype=torch.uint8)
    order = torch.randperm(300)
    spans = [(start, min(start + 64, 300)) for start in range(0, 300, 64)]
    resident = ResidentImages(images.to(GPU))
    streamed = StreamedImages(images, GPU)
    for a, b in zip(resident.gather(order, spans), streamed.gather(order, spans), strict=True):
        assert b.device.type == "cuda" and torch.equal(a, b)
    assert torch.equal(torch.cat(list(streamed.chunks(100))).cpu(), images)


def _train(data: PreparedData, *, resident: bool, freeze: int):
    params = dataclasses.replace(PARAMS, freeze_depth=freeze, unfreeze_epoch=1 if freeze else None)
    cache = FeatureCache() if freeze else None
    env = TrainEnvironment(GPU, 0, "crop_flip", feature_cache=cache, resident=resident)
    cfg = dataclasses.replace(CFG, device="cuda")
    return train(_model(), data, params, cfg, env, TrainHooks())


@pytest.mark.parametrize("freeze", [0, 3])
def test_streamed_and_resident_runs_agree_on_the_gpu(toy: PreparedData, freeze: int) -> None:
    """Same batches and draws; cuDNN may sum in another order, so equal up to bf16 rounding."""
    resident = _train(toy, resident=True, freeze=freeze)
    streamed = _train(toy, resident=False, freeze=freeze)
    for a, b in zip(resident.history, streamed.history, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, rel=0.05)
    assert all(
        torch.isfinite(t).all() for t in streamed.best_state.values() if t.is_floating_point()
    )


def test_auto_divides_the_gpu_among_the_workers_sharing_it(toy: PreparedData) -> None:
    alone = choose_placement(toy, GPU, TrainConfig(), sharing=1)
    four = choose_placement(toy, GPU, TrainConfig(), sharing=4)
    assert alone.resident and four.resident and "on cuda" in alone.describe()
    assert four.allowed_bytes == pytest.approx(alone.allowed_bytes / 4, rel=0.05)
    assert alone.allowed_bytes <= free_bytes(GPU)
