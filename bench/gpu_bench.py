"""GPU throughput: the bare training step (the ceiling) and tuner's engine, resident and streamed.

Run by ``bench/gpu_check.sh`` on a machine with CUDA; prints a Markdown block for
``bench/RESULTS.md``. It measures:

1. **The ceiling**: images/s of the bare ResNet-18 and ResNet-50 training step (forward,
   backward, SGD with momentum) in bf16 autocast and channels_last at 224 px, batch 256, on
   random tensors already on the GPU (after warm-up steps).
2. **Validation in fp32 against bf16 autocast** (the engine validates in fp32; not enforced,
   the evidence for whether it should change): images/s of the ResNet-18 and ResNet-50
   eval-mode forward at 224 px.
3. **tuner's engine epoch** (``tuner.engine.train``, one epoch: training pass plus validation,
   ResNet-18 from random init, full fine-tune, batch 256, flips) on synthetic CIFAR-10-sized
   data held in memory-mapped ``.npy`` files as ``tuner prepare`` writes them: 50,000 + 10,000
   images at 32 px, and 20,000 + 2,000 at 224 px (to stay in the check's 8 minutes), with
   ``train.data_on_device`` resident and streamed. Each is run twice and the second run
   counted (the first pays cuDNN's autotuning); images/s are training images over the
   epoch's seconds.

Goals (issue 12), enforced: the engine epoch at 224 px at least 70% of the ResNet-18 ceiling;
streamed within 15% of resident at both sizes. The last line says "passed" or "FAILED" with
the numbers, and the exit status is 1 when a goal is not met.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tuner.config import ResolvedWeights, TrainConfig  # noqa: E402
from tuner.data import PreparedData  # noqa: E402
from tuner.data.cache import read  # noqa: E402
from tuner.engine import TrainEnvironment, TrainHooks, build_model, train  # noqa: E402
from tuner.recipe import TrialParams  # noqa: E402

GPU = torch.device("cuda")
BATCH = 256
SHARE_GOAL = 0.70  # the engine epoch at 224 px against the bare step
STREAMED_GAP = 0.15  # streamed may be this much slower than resident, no more


def ceiling(arch: str, steps: int) -> float:
    """Images/s of the bare bf16 channels_last training step at 224 px."""
    model = build_model(arch, 10, ResolvedWeights.random_init()).to(GPU)
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(BATCH, 3, 224, 224, device=GPU).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (BATCH,), device=GPU)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(10):
        step()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return steps * BATCH / (time.perf_counter() - started)


@torch.no_grad()
def eval_speed(arch: str, bf16: bool, steps: int) -> float:
    """Images/s of the validation forward pass at 224 px, batch 512, in fp32 (what the engine
    evaluates in) or under bf16 autocast (what it could): the evidence for that choice."""
    model = build_model(arch, 10, ResolvedWeights.random_init()).to(GPU).eval()
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(512, 3, 224, 224, device=GPU).to(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        for _ in range(5):
            model(x)
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(steps):
            model(x)
        torch.cuda.synchronize()
    return steps * 512 / (time.perf_counter() - started)


def synthetic(folder: Path, train_n: int, val_n: int, size: int) -> PreparedData:
    """Random CIFAR-10-sized data written as a cache entry's .npy files, memory-mapped back."""
    rng = np.random.default_rng(0)
    for name, n in (("train", train_n), ("val", val_n)):
        images = np.lib.format.open_memmap(
            folder / f"{name}_images.npy", "w+", np.uint8, (n, 3, size, size)
        )
        for start in range(0, n, 2048):
            stop = min(start + 2048, n)
            images[start:stop] = rng.integers(0, 256, (stop - start, 3, size, size), np.uint8)
        images.flush()
        np.save(folder / f"{name}_labels.npy", rng.integers(0, 10, n).astype(np.int64))
    (folder / "meta.json").write_text(
        '{"class_names": ["0","1","2","3","4","5","6","7","8","9"], '
        f'"fingerprint": "synthetic-{size}", "skipped_files": []}}'
    )
    arrays, meta = read(folder)
    return PreparedData(
        **arrays, class_names=tuple(meta["class_names"]), fingerprint=meta["fingerprint"]
    )


def engine_epoch(data: PreparedData, resident: bool) -> float:
    torch.manual_seed(0)
    model = build_model("resnet18", 10, ResolvedWeights.random_init())
    params = TrialParams(0, None, "all", 1e-3, 1e-3, "sgd", BATCH, 1e-4)
    cfg = TrainConfig(epochs=1, device="cuda", eval_batch_size=512, lr_schedule="none")
    env = TrainEnvironment(GPU, 0, "flip", resident=resident)
    result = train(model, data, params, cfg, env, TrainHooks())
    return len(data.train_labels) / result.history[0].seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    rows = ["| what | images/s |", "|---|---:|"]
    ceilings = {}
    for arch in ("resnet18", "resnet50"):
        ceilings[arch] = ceiling(arch, args.steps)
        rows.append(f"| bare {arch} bf16 channels_last step, 224 px, batch {BATCH} | "
                    f"{ceilings[arch]:.0f} |")  # fmt: skip
        print(rows[-1], flush=True)
    for arch in ("resnet18", "resnet50"):
        fp32, bf16 = (eval_speed(arch, amp, max(5, args.steps // 3)) for amp in (False, True))
        rows.append(f"| {arch} validation forward, 224 px, batch 512: fp32 / bf16 autocast | "
                    f"{fp32:.0f} / {bf16:.0f} ({bf16 / fp32:.1f}x) |")  # fmt: skip
        print(rows[-1], flush=True)
    epochs: dict[tuple[int, str], float] = {}
    for size, train_n, val_n in ((32, 50_000, 10_000), (224, 20_000, 2_000)):
        with tempfile.TemporaryDirectory(prefix="gpu-bench-") as folder:
            data = synthetic(Path(folder), train_n, val_n, size)
            for mode in ("resident", "streamed"):
                runs = [engine_epoch(data, mode == "resident") for _ in range(2)]
                epochs[(size, mode)] = runs[-1]
                rows.append(f"| tuner engine epoch, {size} px, {train_n} images, {mode} | "
                            f"{runs[-1]:.0f} (first run {runs[0]:.0f}) |")  # fmt: skip
                print(rows[-1], flush=True)
    passed, verdict = judge(ceilings["resnet18"], epochs)
    rows += ["", *verdict]
    print("\n".join(rows))
    return 0 if passed else 1


def judge(ceiling18: float, epochs: dict[tuple[int, str], float]) -> tuple[bool, list[str]]:
    """The goals, enforced: the engine epoch at 224 px (resident) at least 70% of the
    ResNet-18 ceiling, and streamed within 15% of resident at every size; (passed, the lines
    saying so with the numbers, the last one the verdict)."""
    share = epochs[(224, "resident")] / ceiling18
    sizes = sorted({size for size, _ in epochs})
    speeds = {s: epochs[(s, "streamed")] / epochs[(s, "resident")] for s in sizes}
    share_ok = share >= SHARE_GOAL
    streamed_ok = all(speed >= 1 - STREAMED_GAP for speed in speeds.values())
    streamed = ", ".join(f"{s} px {100 * speed:.0f}%" for s, speed in speeds.items())
    lines = [
        f"* engine epoch at 224 px (resident) = {100 * share:.0f}% of the ResNet-18 ceiling "
        f"(goal >= {100 * SHARE_GOAL:.0f}%: {'met' if share_ok else 'NOT met'}; the epoch "
        "includes validation)",
        f"* streamed vs resident: {streamed} of resident speed (goal within "
        f"{100 * STREAMED_GAP:.0f}%: {'met' if streamed_ok else 'NOT met'})",
    ]
    engine = (
        f"engine epoch {epochs[(224, 'resident')]:.0f} images/s at 224 px = {100 * share:.0f}% "
        f"of the {ceiling18:.0f} ceiling"
    )
    failures = [] if share_ok else [f"{engine} (< {100 * SHARE_GOAL:.0f}%)"]
    failures += (
        []
        if streamed_ok
        else [f"streamed {streamed} of resident (< {100 - 100 * STREAMED_GAP:.0f}%)"]
    )
    if failures:
        return False, [*lines, f"FAILED: {'; '.join(failures)}"]
    return True, [*lines, f"passed: {engine}; streamed {streamed} of resident"]


if __name__ == "__main__":
    sys.exit(main())
