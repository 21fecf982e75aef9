"""tuner's training engine against the plain way (issue 4), side by side in one invocation.

Run from the repository root (a fresh clone with the package installed):

    python bench/engine_vs_reference.py [--trials N] [--quick] [--out bench/RESULTS.md]

It measures, on the default study (scikit-learn's digits at 32 px, ResNet-18, 4 epochs):

1. **The ceiling**: images/s of the bare training step (forward, backward, Adam) of the whole
   model on synthetic tensors already on the device.
2. **One epoch per freeze depth 0..5**: images/s of a training epoch (training pass plus
   validation, as a trial runs it) of the engine (``tuner.engine.train`` with a feature cache,
   the trial's first epoch and its second, when the frozen stages' outputs are reused) and of
   the reference loop (``bench/reference_search.py``: PIL + transforms + DataLoader, full
   forward); the engine's full fine-tune epoch as a fraction of the ceiling.
3. **The search**: `tuner search --trials N` (default: the default study's budget, 50) as a
   user runs it (the CLI in a fresh folder, so its wall time includes start-up and building
   the data cache), the same with Optuna's plain Hyperband (``search.pruner=hyperband``,
   ``search.prune_after_unfreeze=false``), and the reference search with N trials:
   trials/hour, best validation accuracy, epochs spent.

``--threads N`` sets torch's CPU threads here and in the `tuner search` it starts (the default
is torch's: one per core). ``--quick`` (a few minutes on a quiet 2-core CPU) uses 2-epoch
trials, 3 of them, and times the per-depth epochs on 512 training images, once each; its
numbers are indicative only. The full run takes each per-depth number as the best of two.
A benchmark, not a test: nothing is asserted; the numbers are printed and, with --out,
appended to that file.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import optuna  # noqa: E402
import reference_search as ref  # noqa: E402
import results_file  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Subset  # noqa: E402

from tuner.config import TrainConfig, load_config  # noqa: E402
from tuner.data.prepare import PreparedData, prepare_data  # noqa: E402
from tuner.engine import (  # noqa: E402
    FeatureCache,
    TrainEnvironment,
    TrainHooks,
    build_model,
    resolve_device,
    resolve_weights,
    train,
)
from tuner.recipe import TrialParams  # noqa: E402

SECTION = "## Engine vs the plain way (issue 4)"
BATCH = 64
PLAIN_HYPERBAND = ["search.pruner=hyperband", "search.prune_after_unfreeze=false"]


@dataclasses.dataclass(frozen=True)
class SearchRun:
    name: str
    trials: int
    seconds: float
    best: float
    complete: int
    pruned: int
    epochs: int

    @property
    def per_hour(self) -> float:
        return self.trials / self.seconds * 3600


def ceiling(device: torch.device, steps: int) -> float:
    """Images/s of the bare step: whole ResNet-18, synthetic batch on the device, Adam."""
    torch.manual_seed(0)
    model = build_model("resnet18", 10, resolve_weights("resnet18", "none")).to(device)
    x = torch.randn(BATCH, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (BATCH,), device=device)
    on_cuda = device.type == "cuda"
    if on_cuda:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    loss_fn = nn.CrossEntropyLoss()
    model.train()

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_cuda):
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    if on_cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if on_cuda:
        torch.cuda.synchronize()
    return steps * BATCH / (time.perf_counter() - started)


def engine_epochs(
    data: PreparedData, weights, device: torch.device, depth: int, epochs: int
) -> list[float]:
    """Seconds of each epoch of a trial at ``depth`` (frozen throughout)."""
    params = TrialParams(
        freeze_depth=depth,
        unfreeze_epoch=None,
        unfreeze_mode="all",
        head_lr=1e-3,
        backbone_lr=1e-4 if depth < 5 else None,
        optimizer="adam",
        batch_size=BATCH,
        weight_decay=1e-5,
    )
    torch.manual_seed(0)
    model = build_model("resnet18", data.num_classes, weights)
    result = train(
        model,
        data,
        params,
        TrainConfig(epochs=epochs, lr_schedule="none"),
        TrainEnvironment(device=device, seed=0, augment="flip", feature_cache=FeatureCache()),
        TrainHooks(),
    )
    return [m.seconds for m in result.history]


def reference_epoch(
    train_dir: Path, val_dir: Path, state: dict | None, depth: int, limit: int | None
) -> float:
    """Seconds of one epoch of the reference loop (training pass plus validation)."""
    train_loader, val_loader = ref.loaders(train_dir, val_dir, BATCH)
    if limit is not None:
        subset = Subset(train_loader.dataset, range(limit))
        train_loader = DataLoader(subset, batch_size=BATCH, shuffle=True, drop_last=True)
    torch.manual_seed(0)
    model = ref.new_model(state)
    ref.freeze(model, depth)
    params = TrialParams(depth, None, "all", 1e-3, 1e-4, "adam", BATCH, 1e-5)
    optimizer = ref.make_optimizer(model, params, depth)
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"]
    started = time.perf_counter()
    ref.train_epoch(model, train_loader, optimizer, nn.CrossEntropyLoss())
    ref.evaluate(model, val_loader)
    return time.perf_counter() - started


def tuner_search(trials: int, epochs: int, extra: list[str], name: str) -> SearchRun:
    """`tuner search` as a user runs it, in a fresh folder; read the outcome from its study."""
    with tempfile.TemporaryDirectory() as tmp:
        sets = ["--set", f"train.epochs={epochs}", *[a for s in extra for a in ("--set", s)]]
        if epochs < 3:
            sets += ["--set", "space.unfreeze_epoch={choices: [never, 1]}"]
        command = [sys.executable, "-m", "tuner.cli", "search", "--trials", str(trials), *sets]
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "OMP_NUM_THREADS": str(torch.get_num_threads()),
        }
        for variable in ("TUNER_STORAGE", "TUNER_ARTIFACTS"):
            env.pop(variable, None)
        started = time.perf_counter()
        subprocess.run(command, cwd=tmp, env=env, check=True, capture_output=True)
        seconds = time.perf_counter() - started
        study = optuna.load_study(study_name="default", storage=f"sqlite:///{tmp}/tuner.db")
        finished = [t for t in study.trials if t.state.is_finished()]
        states = [t.state for t in finished]
        return SearchRun(
            name,
            len(finished),
            seconds,
            study.best_value,
            states.count(optuna.trial.TrialState.COMPLETE),
            states.count(optuna.trial.TrialState.PRUNED),
            sum(len(t.user_attrs.get("val_accuracy", [])) for t in finished),
        )


def reference_search(trials: int, epochs: int) -> SearchRun:
    result = ref.run(trials, epochs)
    return SearchRun(
        "reference (PIL + DataLoader, MedianPruner)",
        result.trials,
        result.seconds,
        result.best_accuracy,
        result.complete,
        result.pruned,
        result.epochs_run,
    )


def machine() -> str:
    cores = os.cpu_count()
    load = os.getloadavg()[0]
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cores} CPU cores ({platform.processor() or platform.machine()}), {gpu}, "
        f"{torch.get_num_threads()} torch threads; Python {platform.python_version()}, "
        f"torch {torch.__version__}, Optuna {optuna.__version__}; 1-minute load average "
        f"{load:.2f} at the start"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--trials", type=int, help="trials per search (default: the default study's 50; quick: 3)"
    )
    parser.add_argument("--quick", action="store_true", help="a small run, about 2 minutes")
    parser.add_argument("--out", type=Path, help="append the results to this file")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = args.trials or (3 if args.quick else load_config(None, []).search.trials)
    epochs = 2 if args.quick else 4
    limit = 512 if args.quick else None
    repeats = 1 if args.quick else 2
    command = " ".join(["python bench/engine_vs_reference.py", *sys.argv[1:]])
    started = time.perf_counter()
    lines = [f"Command: `{command}`", f"Machine: {machine()}."]
    say = print

    device = resolve_device("auto")
    config = load_config(None, [])
    weights = resolve_weights("resnet18", config.model.weights)
    say(f"device {device}; weights: {weights.describe()}")
    roof = max(ceiling(device, 10 if args.quick else 30) for _ in range(repeats))
    say(f"ceiling: {roof:.0f} img/s")

    with tempfile.TemporaryDirectory() as tmp:
        data = prepare_data(config.data, Path(tmp) / "cache")
        if limit is not None:
            data = dataclasses.replace(
                data, train_images=data.train_images[:limit], train_labels=data.train_labels[:limit]
            )
        train_dir, val_dir = ref.write_digits(Path(tmp) / "png")
        state = ref.pretrained_state()
        n = len(data.train_labels)
        rows = []
        for depth in range(6):  # the best of `repeats` later epochs / reference epochs
            cold, *later = engine_epochs(data, weights, device, depth, 1 + repeats)
            warm = min(later)
            plain = min(
                reference_epoch(train_dir, val_dir, state, depth, limit) for _ in range(repeats)
            )
            rows.append((depth, n / cold, n / warm, n / plain))
            say(f"depth {depth}: engine {n / cold:.0f} / {n / warm:.0f} img/s, ref {n / plain:.0f}")

    searches = [
        tuner_search(trials, epochs, [], "tuner search (default: schedule-aware ASHA)"),
        tuner_search(trials, epochs, PLAIN_HYPERBAND, "tuner search, plain Hyperband"),
        reference_search(trials, epochs),
    ]
    for run in searches:
        say(f"{run}")

    elapsed = (time.perf_counter() - started) / 60
    now = datetime.datetime.now(datetime.UTC)
    lines[0] += f" (run {now:%Y-%m-%d %H:%M} UTC, {elapsed:.1f} min in all)"
    lines.append(
        "GPU: none. The device tool's status for this issue said `can_start_another: false` (no "
        "GPU machine lent), so the CIFAR-10-sized 32 and 224 px GPU runs were not made; the code "
        "path for CUDA (data resident on the device, channels_last, bf16 autocast, no host sync "
        "per step, the feature cache on the device) is in place but unmeasured."
    )
    if args.quick:
        lines.append(
            "**Provisional** (`--quick`: 2-epoch trials, per-depth epochs on 512 training "
            "images, on a machine shared with other work): indicative, not the final numbers."
        )
    full = rows[0][2]
    lines.append(
        f"\nCeiling (bare ResNet-18 step, batch {BATCH}, synthetic 32 px tensors on the device): "
        f"**{roof:.0f} img/s**. Engine full fine-tune epoch (depth 0, a later epoch, including "
        f"validation): {full:.0f} img/s = **{full / roof:.0%} of the ceiling**.\n"
    )
    lines.append(
        f"One epoch, {n} training + {len(data.val_labels)} validation images, batch {BATCH}, "
        f"flips, Adam; images/s = training images / (training pass + validation); best of "
        f"{repeats} (the engine's first epoch computes what later ones reuse):\n"
    )
    lines.append(
        "| freeze depth | engine, 1st epoch | engine, later epoch | reference | speed-up (later) |"
    )
    lines.append("|---|---|---|---|---|")
    for depth, cold, warm, plain in rows:
        lines.append(f"| {depth} | {cold:.0f} | {warm:.0f} | {plain:.0f} | {warm / plain:.1f}x |")
    lines.append(
        f"\nSearch on the default study ({trials} trials each, {epochs} epochs per trial):\n"
    )
    lines.append(
        "| search | wall s | trials/hour | best val accuracy | complete / pruned | epochs spent |"
    )
    lines.append("|---|---|---|---|---|---|")
    for run in searches:
        lines.append(
            f"| {run.name} | {run.seconds:.0f} | {run.per_hour:.0f} | {run.best:.4f} | "
            f"{run.complete} / {run.pruned} | {run.epochs} |"
        )
    speedup = searches[0].per_hour / searches[2].per_hour
    lines.append(
        f"\ntuner vs reference: **{speedup:.1f}x** the trials/hour, best accuracy "
        f"{searches[0].best - searches[2].best:+.4f}. Schedule-aware vs plain pruner: best "
        f"{searches[0].best - searches[1].best:+.4f}, epochs spent {searches[0].epochs} vs "
        f"{searches[1].epochs}."
    )
    text = f"{SECTION}\n\n" + "\n".join(lines) + "\n"
    print(text)
    results_file.append_run(args.out, text)


if __name__ == "__main__":
    main()
