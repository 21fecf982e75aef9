"""A search that launches GPU workers leaves CUDA alone; a process that trains sets it up."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import TINY
from tuner.config import PinnedWeights, ResolvedWeights, load_config
from tuner.data.prepare import PreparedData
from tuner.run import driver
from tuner.run.host import ready_host
from tuner.run.launcher import Slot
from tuner.run.request import SearchRequest

# what would create a CUDA context, hold memory on a GPU or ask the driver for its state
_CUDA_CALLS = (
    "_lazy_init", "init", "is_available", "device_count", "current_device", "set_device",
    "mem_get_info", "memory_allocated", "get_device_properties", "synchronize", "empty_cache",
)  # fmt: skip


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every CUDA entry point raises (none can run here; the point is that none is called)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the parent of GPU workers called CUDA")

    for name in _CUDA_CALLS:
        monkeypatch.setattr(torch.cuda, name, refuse)


def _ready(data: PreparedData, folder: Path, gpu_workers: bool):
    config = load_config(None, TINY)
    weights = PinnedWeights((("resnet18", ResolvedWeights.random_init()),))
    return ready_host(
        config, weights, str(folder / "artifacts"), study_name="unit", fingerprint=None,
        data=data, gpu_workers=gpu_workers,
    )  # fmt: skip


def test_a_parent_of_gpu_workers_touches_no_cuda_and_places_nothing(
    tiny_data: PreparedData, tmp_path: Path, no_cuda: None
) -> None:
    context = _ready(tiny_data, tmp_path, gpu_workers=True)
    assert context.device == torch.device("cuda")
    assert context.placement is None and len(context.feature_cache) == 0


def test_a_process_that_trains_chooses_its_placement_as_before(
    tiny_data: PreparedData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.setenv("TUNER_WORKERS_ON_DEVICE", "4")  # the CPU's memory is not divided
    context = _ready(tiny_data, tmp_path, gpu_workers=False)
    assert context.device == torch.device("cpu")
    assert context.placement is not None and context.placement.device == "cpu"
    assert context.feature_cache.max_bytes == context.config.train.feature_cache_mb << 20
    assert torch.backends.cudnn.benchmark is False


def test_the_search_header_names_the_gpu_workers_devices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_cuda: None
) -> None:
    monkeypatch.chdir(tmp_path)
    request = SearchRequest(
        None, tuple(TINY), storage=f"sqlite:///{tmp_path / 't.db'}", artifacts="artifacts"
    )
    placed = [("2", "0"), ("2", "0"), ("3", "1"), ("3", "1")]  # under CUDA_VISIBLE_DEVICES=2,3
    slots = [Slot(i, gpu, 3, 2, asked) for i, (gpu, asked) in enumerate(placed)]
    said: list[str] = []
    session = driver.open_search(request, said.append, slots)
    assert session.context.placement is None
    lines = "\n".join(said).splitlines()
    device = next(line for line in lines if line.startswith("device:"))
    assert device == (
        "device:    cuda in 4 worker processes on GPU 2, 3 (--gpus 0,1 read within this "
        "process's CUDA_VISIBLE_DEVICES), 3 CPU threads each"
    )
    placement = next(line for line in lines if line.startswith("placement:"))
    assert "each worker chooses resident or streamed" in placement
