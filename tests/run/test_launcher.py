"""Planning the local worker processes: slots, devices, threads, and what each is started with."""

from __future__ import annotations

import os

import pytest
import torch

from tuner.errors import TunerError
from tuner.run.launcher import Slot, plan_slots, worker_command, worker_environment


def test_workers_share_the_cores_out() -> None:
    slots = plan_slots(workers=4, gpus=None, per_gpu=1)
    assert [s.index for s in slots] == [0, 1, 2, 3]
    assert all(s.gpu is None for s in slots)
    assert all(s.threads == max(1, (os.cpu_count() or 1) // 4) for s in slots)
    assert plan_slots(None, None, 1) == [Slot(0, None, os.cpu_count() or 1)]


def test_each_gpu_slot_is_pinned_before_torch_starts() -> None:
    slot = Slot(index=5, gpu="3", threads=2)
    env = worker_environment(slot, "postgresql+psycopg://u:secret@db/x", "s3://b/p")
    assert env["CUDA_VISIBLE_DEVICES"] == "3" and env["TUNER_GPU"] == "3"
    assert env["OMP_NUM_THREADS"] == "2"
    assert env["TUNER_STORAGE"].endswith("@db/x") and env["TUNER_ARTIFACTS"] == "s3://b/p"
    command = worker_command("study-a", slot)
    assert command[-6:] == ["--worker-index", "5", "--threads", "2", "--device", "cuda"]
    # the storage URL (and its password) travels in the environment, not on the command line
    assert not [part for part in command if "secret" in part]
    cpu = worker_environment(Slot(0, None, 1), "sqlite:///t.db", "a")
    assert cpu.get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")  # untouched
    assert "--device" not in worker_command("s", Slot(0, None, 1))


@pytest.mark.parametrize(
    ("workers", "gpus", "per_gpu", "message"),
    [
        (2, "0", 1, "not both"),
        (0, None, 1, "--workers 0: must be at least 1"),
        (None, "0", 0, "--per-gpu 0"),
        (None, "a,b", 1, "give distinct GPU numbers"),
        (None, "0,0", 1, "give distinct GPU numbers"),
    ],
)
def test_bad_worker_plans_are_refused(workers, gpus, per_gpu, message: str) -> None:
    with pytest.raises(TunerError, match=message):
        plan_slots(workers, gpus, per_gpu)


def test_gpus_this_host_lacks_are_refused_with_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # a mask counts instead
    visible = torch.cuda.device_count()
    with pytest.raises(TunerError, match=f"torch sees {visible} CUDA device"):
        plan_slots(None, f"{visible}", 1)


@pytest.mark.skipif(torch.cuda.device_count() < 1, reason="needs a CUDA device")
def test_per_gpu_places_k_workers_on_each_gpu() -> None:
    slots = plan_slots(None, "0", per_gpu=3)
    assert [s.gpu for s in slots] == ["0", "0", "0"]
