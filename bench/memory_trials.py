"""Memory over many trials of one worker (issue 4, item 4): RSS after every trial.

Run from the repository root:

    python bench/memory_trials.py [--trials 50] [--out bench/RESULTS.md]

One worker process (this one) runs a study of small real trials (digits, 60 per class, at
16 px, ResNet-18, 3 epochs, every freeze depth) through ``tuner.run.workers.run_worker``, as
`tuner worker` does, and records its resident set size (VmRSS) after each trial. Growth
shows as a slope over the trials after the first few (the first trials allocate torch's
caches and the feature cache).
A benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import optuna  # noqa: E402
import results_file  # noqa: E402
import torch  # noqa: E402

from tuner.config import PinnedWeights, ResolvedWeights, load_config  # noqa: E402
from tuner.data.prepare import prepare_data  # noqa: E402
from tuner.engine.features import FeatureCache  # noqa: E402
from tuner.run.host import SearchContext  # noqa: E402
from tuner.run.workers import run_worker  # noqa: E402
from tuner.search import study as study_mod  # noqa: E402
from tuner.search.storage import artifact_store, open_storage  # noqa: E402

SECTION = "## Memory over many trials (issue 4)"


def rss_mib() -> float:
    """This process's resident set size in MiB, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(trials: int) -> list[float]:
    overrides = [
        "data.image_size=16",
        "data.per_class=60",
        "model.weights=none",
        "train.epochs=3",
        "search.baselines=false",
        "search.pruner=none",
        f"search.trials={trials}",
        "search.study=memory",
    ]
    config = load_config(None, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = prepare_data(config.data, folder / "cache")
        storage = open_storage(f"sqlite:///{folder / 'memory.db'}")
        weights = PinnedWeights((("resnet18", ResolvedWeights.random_init()),))
        pinned = study_mod.create_pinned(storage, config, weights, data.fingerprint)
        store = artifact_store(str(folder / "artifacts"))
        cache = FeatureCache(config.train.feature_cache_mb << 20)
        context = SearchContext(
            config, data, weights, torch.device("cpu"), store, feature_cache=cache
        )
        samples: list[float] = []

        def record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            samples.append(rss_mib())
            print(f"trial {trial.number}: RSS {samples[-1]:.0f} MiB", flush=True)

        run_worker(pinned.study, context, (record,))
        return samples


def report(samples: list[float], seconds: float, command: str) -> str:
    n = len(samples)
    tail = samples[min(10, n - 1) :]
    slope = (tail[-1] - tail[0]) / max(len(tail) - 1, 1)
    rows = "\n".join(
        f"| {i + 1} | {samples[i]:.0f} |" for i in sorted({0, 4, 9, 19, 29, 39, n - 1}) if i < n
    )
    now = datetime.datetime.now(datetime.UTC)
    return (
        f"{SECTION}\n\nCommand: `{command}` (run {now:%Y-%m-%d %H:%M} UTC, "
        f"{seconds / 60:.1f} min). Machine: {platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, Python {platform.python_version()}, "
        f"torch {torch.__version__}, Optuna {optuna.__version__}; CPU, no GPU.\n\n"
        f"One worker ran {n} trials (digits, 60 per class, at 16 px, ResNet-18 random init, "
        "3 epochs, pruning off, the default space so every freeze depth occurs) in one "
        "process; RSS after each:"
        f"\n\n| after trial | RSS MiB |\n|---|---|\n{rows}\n\n"
        f"From trial {min(11, n)} to {n}: {tail[-1] - tail[0]:+.1f} MiB in all, "
        f"{slope:+.2f} MiB per trial.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--out", type=Path, help="append the results to this file")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)  # OpenMP threads stall badly on a shared machine
    started = time.perf_counter()
    samples = measure(args.trials)
    command = "python bench/memory_trials.py" + (
        f" --trials {args.trials}" if args.trials != 50 else ""
    )
    text = report(samples, time.perf_counter() - started, command)
    print(text)
    print("all samples (MiB):", " ".join(f"{s:.0f}" for s in samples))
    results_file.append_run(args.out, text)


if __name__ == "__main__":
    main()
