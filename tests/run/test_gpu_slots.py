"""--gpus as the physical devices the workers get, under this process's CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

import pytest
import torch

from tuner.errors import TunerError
from tuner.run.launcher import (
    Slot,
    _describe_slots,
    child_visible_devices,
    describe_gpus,
    plan_slots,
    worker_environment,
)

A = "GPU-8932f937-d72c-4106-c12f-20bd9faed9f6"
B = "GPU-5c1a0e4b-1f2d-4c3e-9a8b-7d6e5f4a3b2c"
MIG = "MIG-0d6c3d1f-8e9a-5b4c-a3d2-1e0f9a8b7c6d"


@pytest.mark.parametrize(
    ("requested", "parent", "expected"),
    [
        (["0", "1"], None, ["0", "1"]),  # unmasked: numbers are the host's
        (["3", A], None, ["3", A]),  # unmasked: a UUID is passed on for CUDA to resolve
        (["0", "1"], "2,3", ["2", "3"]),  # Slurm/Docker: positions in the mask
        (["1"], " 5 , 7 ", ["7"]),
        (["1", "0"], f"{A},{B}", [B, A]),  # a mask of UUIDs: position i is its i-th entry
        ([B], f"{A},{B}", [B]),  # a UUID within the mask
        (["GPU-5c1a"], f"{A},{B}", [B]),  # a unique prefix, written as the mask spells it
        ([A], "GPU-8932f937", ["GPU-8932f937"]),  # the mask holds a prefix of it
        (["0"], MIG, [MIG]),
        (["0", "1"], "2,3,-1,4", ["2", "3"]),  # CUDA reads a mask up to its first bad entry
    ],
)
def test_gpus_become_the_physical_devices_the_workers_see(
    requested: list[str], parent: str | None, expected: list[str]
) -> None:
    assert child_visible_devices(requested, parent) == expected


@pytest.mark.parametrize(
    ("requested", "parent", "message"),
    [
        (["a"], None, "give distinct GPU numbers or UUIDs"),
        ([], None, "give distinct GPU numbers or UUIDs"),
        (["0", "0"], None, "GPU 0 is given twice"),
        (["2"], "2,3", r"sees 2 GPU\(s\) \(CUDA_VISIBLE_DEVICES=2,3\).* no GPU 2"),
        (["0", A], f"{A},{B}", rf"GPU {A} is given twice \(within CUDA_VISIBLE_DEVICES="),
        ([A], "2,3", "names GPUs by number, so the UUID"),
        (["GPU-ffff"], f"{A},{B}", "matches none of the GPUs"),
        (["GPU-"], f"{A},{B}", r"matches 2 \(give more of the UUID\)"),
        (["0"], "", "CUDA_VISIBLE_DEVICES='' hides every GPU"),
        (["0"], "-1", "CUDA_VISIBLE_DEVICES='-1' hides every GPU"),
    ],
)
def test_gpus_the_workers_cannot_have_are_refused(
    requested: list[str], parent: str | None, message: str
) -> None:
    with pytest.raises(TunerError, match=message) as refused:
        child_visible_devices(requested, parent)
    assert "--gpus" in str(refused.value)
    if parent is not None:
        assert "CUDA_VISIBLE_DEVICES" in str(refused.value)


def test_a_masked_parent_places_its_workers_within_its_mask(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No GPU here: under a mask its length is the count, so torch is not asked."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    monkeypatch.setattr(torch.cuda, "device_count", _no_cuda)
    slots = plan_slots(None, "1,0", per_gpu=2)
    assert [(s.gpu, s.asked, s.sharing) for s in slots] == [
        ("3", "1", 2), ("3", "1", 2), ("2", "0", 2), ("2", "0", 2),
    ]  # fmt: skip
    env = worker_environment(slots[0], "sqlite:///t.db", "a")
    assert env["CUDA_VISIBLE_DEVICES"] == "3" and env["TUNER_GPU"] == "3"
    assert env["TUNER_WORKERS_ON_DEVICE"] == "2"
    assert describe_gpus(slots) == (
        "GPU 3, 2 (--gpus 1,0 read within this process's CUDA_VISIBLE_DEVICES)"
    )
    threads = slots[0].threads
    assert _describe_slots(slots).endswith(f"DEVICES), 2 per GPU, {threads} CPU threads each")
    with pytest.raises(TunerError, match="there is no GPU 2; give positions in it"):
        plan_slots(None, "0,2", per_gpu=1)


def test_unmasked_gpus_are_counted_by_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    slots = plan_slots(None, f"1,{A}", per_gpu=1)
    assert [s.gpu for s in slots] == ["1", A]
    assert describe_gpus(slots) == f"GPU 1, {A}"
    assert _describe_slots(slots).startswith(f"on GPU 1, {A}, ")
    with pytest.raises(TunerError, match=r"torch sees 2 CUDA device\(s\).* no GPU 2"):
        plan_slots(None, "0,2", per_gpu=1)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(TunerError, match=f"no GPU {A}"):
        plan_slots(None, A, per_gpu=1)


def test_gpu_workers_allocate_in_expandable_segments_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    monkeypatch.delenv("PYTORCH_ALLOC_CONF", raising=False)
    gpu, cpu = Slot(0, "0", 1), Slot(0, None, 1)
    assert worker_environment(gpu, "u", "a")["PYTORCH_CUDA_ALLOC_CONF"] == (
        "expandable_segments:True"
    )
    assert "PYTORCH_CUDA_ALLOC_CONF" not in worker_environment(cpu, "u", "a")
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128")
    assert worker_environment(gpu, "u", "a")["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:128"
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF")
    monkeypatch.setenv("PYTORCH_ALLOC_CONF", "backend:cudaMallocAsync")  # torch's newer name
    env = worker_environment(gpu, "u", "a")
    assert "PYTORCH_CUDA_ALLOC_CONF" not in env
    assert env["PYTORCH_ALLOC_CONF"] == "backend:cudaMallocAsync"


def _no_cuda(*args: object, **kwargs: object) -> None:
    raise AssertionError("a masked parent needs no CUDA call to check --gpus")
