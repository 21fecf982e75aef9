"""What a worker sets up for its device without a CUDA call: its feature cache share, cuDNN."""

from __future__ import annotations

import pytest
import torch

from tuner.config import TrainConfig
from tuner.engine import configure_backends, feature_cache_bytes
from tuner.engine.placement import WORKERS_ON_DEVICE_ENV

GPU, CPU = torch.device("cuda"), torch.device("cpu")  # a device object makes no CUDA call


def test_workers_sharing_a_gpu_divide_the_feature_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = TrainConfig(feature_cache_mb=1024)
    monkeypatch.delenv(WORKERS_ON_DEVICE_ENV, raising=False)
    assert feature_cache_bytes(cfg, GPU) == 1 << 30
    monkeypatch.setenv(WORKERS_ON_DEVICE_ENV, "4")  # the launcher's --per-gpu 4
    assert feature_cache_bytes(cfg, GPU) == 256 << 20
    assert feature_cache_bytes(cfg, torch.device("cuda:1"), sharing=3) == (1 << 30) // 3
    # on the CPU each worker's cache is in its own memory: not divided
    assert feature_cache_bytes(cfg, CPU) == 1 << 30
    assert feature_cache_bytes(TrainConfig(feature_cache_mb=0), GPU) == 0  # off stays off


@pytest.mark.parametrize(("device", "benchmark"), [(GPU, True), (CPU, False)])
def test_cudnn_benchmarks_its_algorithms_in_cuda_workers(
    device: torch.device, benchmark: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", not benchmark)
    configure_backends(device)
    assert torch.backends.cudnn.benchmark is benchmark
