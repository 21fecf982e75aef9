"""What `space.ema` costs per training step: the same steps with and without the weight average.

    python bench/ema_cost.py [--image-size 32] [--batch 64] [--repeats 7] [--out bench/RESULTS.md]

A ResNet-18 (10 classes) trains on random images with AdamW, fully trainable (freeze depth 0)
and with everything but layer4 and the head frozen (depth 4: a cheap step, so the average's
share is largest, since it averages the whole state dict either way). Blocks of steps with and
without ``WeightEma.update`` alternate, so a machine that slows down mid-run slows both alike;
the table gives the median over blocks and the overhead of the update.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import anytime  # noqa: E402
import results_file  # noqa: E402

from tuner.engine.ema import WeightEma  # noqa: E402
from tuner.engine.model import set_frozen, set_train_mode  # noqa: E402

STEPS = 10  # per block


def block_seconds(model: nn.Module, ema: WeightEma | None, images, labels, optimizer) -> float:
    """Seconds per step over one block of training steps, updating ``ema`` after each if given."""
    started = time.perf_counter()
    for _ in range(STEPS):
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
        if ema is not None:
            ema.update(model)
    return (time.perf_counter() - started) / STEPS


def measure(depth: int, image_size: int, batch: int, repeats: int) -> tuple[float, float]:
    """Median seconds per step without and with the average, at one freeze depth."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    set_frozen(model, depth)
    set_train_mode(model, depth)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    images = torch.randn(batch, 3, image_size, image_size)
    labels = torch.randint(0, 10, (batch,))
    ema = WeightEma(model, 0.99)
    block_seconds(model, ema, images, labels, optimizer)  # warm-up: allocator, kernels
    plain, averaged = [], []
    for _ in range(repeats):
        plain.append(block_seconds(model, None, images, labels, optimizer))
        averaged.append(block_seconds(model, ema, images, labels, optimizer))
    return statistics.median(plain), statistics.median(averaged)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, help="append the results to this markdown file")
    args = parser.parse_args()
    rows = []
    for depth in (0, 4):
        plain, averaged = measure(depth, args.image_size, args.batch, args.repeats)
        rows.append(
            f"| {depth} | {1000 * plain:.1f} | {1000 * averaged:.1f} | "
            f"{1000 * (averaged - plain):+.1f} ({100 * (averaged / plain - 1):+.0f}%) |"
        )
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join(
        [
            f"## What EMA costs per step ({when})",
            "",
            f"Command: `python bench/ema_cost.py --image-size {args.image_size} --batch "
            f"{args.batch} --repeats {args.repeats}`; {anytime.cpu()}, "
            f"{torch.get_num_threads()} torch threads, no GPU. "
            f"ResNet-18, AdamW, median over {args.repeats} alternating blocks of {STEPS} steps.",
            "",
            "| freeze depth | ms/step, no EMA | ms/step, EMA 0.99 | EMA's cost |",
            "| --- | --- | --- | --- |",
            *rows,
            "",
        ]
    )
    print(text)
    results_file.append_run(args.out, text)


if __name__ == "__main__":
    main()
