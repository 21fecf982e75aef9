"""A training step never waits for the GPU: every path's steps under CUDA's sync debug mode.

    python bench/gpu_sync_check.py [--device cuda]

Each path (resident and streamed images, cached features of a frozen prefix, the frozen
prefix run every step, the weight average, mixup, cutmix, label smoothing with class
weights, all at once) builds a ``TrainingRun`` on a tiny synthetic ``PreparedData`` and trains
one warm-up epoch (optimizer state, cached features and per-device constants are built
there), then a second epoch whose steps run under
``torch.cuda.set_sync_debug_mode("error")``: any step that reads a number back from the GPU,
makes an output sized by the data or uploads from pageable memory raises there. The epoch's
end (its one loss read) and validation run outside it.

Prints a line per path and a last line: all passed, or which paths failed and at which line
of tuner. ``--device cpu`` runs the same paths without the sync mode (CUDA has none on the
CPU): it shows only that the paths build and train, as the tests do.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from tuner.config import ResolvedWeights, TrainConfig  # noqa: E402
from tuner.data import PreparedData  # noqa: E402
from tuner.engine import FeatureCache, build_model  # noqa: E402
from tuner.engine.epoch import EpochBatches  # noqa: E402
from tuner.engine.features import forward_suffix  # noqa: E402
from tuner.engine.train import TrainEnvironment, TrainingRun  # noqa: E402
from tuner.recipe import TrialParams  # noqa: E402

CLASSES = 3
PARAMS = TrialParams(0, None, "all", 1e-3, 1e-3, "adam", 16, 1e-4)
# (environment, recipe) per path; environment keys: augment, resident, cache, weights
PATHS: dict[str, tuple[dict, dict]] = {
    "resident images": ({"augment": "crop_flip_jitter"}, {}),
    "streamed images": ({"augment": "crop_flip_jitter", "resident": False}, {}),
    "cached features": ({"augment": "flip", "cache": True}, {"freeze_depth": 3}),
    "frozen prefix": ({"augment": "crop_flip", "cache": True}, {"freeze_depth": 3}),
    "ema": ({"augment": "flip"}, {"ema": 0.9}),
    "mixup": ({"augment": "flip"}, {"mixup": 0.4, "optimizer": "sgd"}),
    "cutmix": ({"augment": "flip"}, {"cutmix": 1.0, "optimizer": "adamw"}),
    "smoothing + class weights": ({"augment": "flip", "weights": True}, {"label_smoothing": 0.1}),
    "all at once": (
        {"augment": "crop_flip", "resident": False, "cache": True, "weights": True},
        {"freeze_depth": 2, "label_smoothing": 0.1, "mixup": 0.3, "cutmix": 1.0, "ema": 0.9},
    ),
}


def synthetic_data(size: int = 32, train: int = 64, val: int = 32) -> PreparedData:
    """Random images and labels: the steps' shapes matter here, not what they learn."""
    generator = torch.Generator().manual_seed(0)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)
        return images, torch.arange(n) % CLASSES

    (train_x, train_y), (val_x, val_y) = split(train), split(val)
    names = tuple(f"class{i}" for i in range(CLASSES))
    return PreparedData(train_x, train_y, val_x, val_y, names, f"sync-check-{size}")


@dataclasses.dataclass(frozen=True)
class _StrictSteps:
    """A run's BatchSource whose epochs raise at any synchronizing CUDA call in their steps.

    The mode is on from the first batch drawn to the last step's end, so the batches' making
    (gather, augment, mix, pick cached features) and every step count; ``used_cache`` says
    whether each epoch fed cached features (the cached path must, or it proves nothing).
    """

    source: object
    cuda: bool
    used_cache: list[bool] = dataclasses.field(default_factory=list)

    def epoch(self, *args, **kwargs) -> EpochBatches:
        batches = self.source.epoch(*args, **kwargs)
        forward = batches.forward
        self.used_cache.append(getattr(forward, "func", None) is forward_suffix)
        return EpochBatches(_strict(batches) if self.cuda else batches, forward)


def _strict(batches: EpochBatches) -> Iterator:
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield from batches
    finally:
        torch.cuda.set_sync_debug_mode("default")


def run_path(name: str, data: PreparedData, device: torch.device) -> str:
    """Warm-up epoch, then an epoch with strict steps; one line saying how it went."""
    env_spec, recipe = PATHS[name]
    env = TrainEnvironment(
        device,
        seed=0,
        augment=env_spec["augment"],
        class_weights=torch.tensor([0.5, 1.0, 1.5]) if env_spec.get("weights") else None,
        feature_cache=FeatureCache() if env_spec.get("cache") else None,
        resident=env_spec.get("resident", True),
    )
    params = dataclasses.replace(PARAMS, **recipe)
    cfg = TrainConfig(epochs=2, device=device.type, eval_batch_size=32)
    torch.manual_seed(0)
    model = build_model("resnet18", CLASSES, ResolvedWeights.random_init())
    run = TrainingRun(model, data, params, cfg, env)
    run.run_epoch(0)
    strict = _StrictSteps(run.batches, cuda=device.type == "cuda")
    run.batches = strict
    try:
        metrics = run.run_epoch(1)
    finally:  # a step that raised leaves the generator, and so the mode, alive
        if strict.cuda:
            torch.cuda.set_sync_debug_mode("default")
    if name == "cached features" and not strict.used_cache[-1]:
        return f"{name}: FAILED: its second epoch did not feed cached features"
    return f"{name}: passed (mean loss {metrics.train_loss:.3f})"


def _where(exc: BaseException) -> str:
    """The innermost line of tuner's code in the traceback: where the sync was asked for."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/tuner/" in f.filename]
    if not frames:
        return ""
    frame = frames[-1]
    where = frame.filename[frame.filename.rindex("/tuner/") + 1 :]
    return f" at {where}:{frame.lineno} ({frame.line})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu for a dry run")
    parser.add_argument("--paths", nargs="*", choices=sorted(PATHS), help="default: all")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    data = synthetic_data()
    failed = []
    for name in args.paths or PATHS:
        try:
            line = run_path(name, data, device)
        except Exception as exc:  # any path that breaks is reported, the others still run
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            line = f"{name}: FAILED: {type(exc).__name__}: {first[:200]}{_where(exc)}"
        print(line, flush=True)
        if "FAILED" in line:
            failed.append(line.split(":")[0])
    mode = "sync debug mode 'error'" if device.type == "cuda" else "no sync mode (CPU)"
    count = len(args.paths or PATHS)
    if failed:
        print(f"FAILED: {len(failed)} of {count} paths on {device} ({mode}): {', '.join(failed)}")
        return 1
    print(f"passed: {count} paths stepped on {device} under {mode}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
