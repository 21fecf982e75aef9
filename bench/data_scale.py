"""Preparing and training on real JPEG folders at scale (issue 12), side by side in one run.

Run from the repository root (a fresh clone with the package installed):

    python bench/data_scale.py [--sizes 2500,5000,10000] [--repeats 2] [--out bench/RESULTS.md]

It writes a synthetic ImageFolder of real JPEG files (320x240, 10 classes) once, in the three
sizes (the smaller ones are hard links to the first files of the largest), and measures, each
in a fresh process whose whole process tree's anonymous memory (``Pss_Anon:`` of
``/proc/<pid>/smaps_rollup``, summed over the tree, sampled every 100 ms; not RSS, which also
counts page cache and the memory-mapped output) is watched for its peak:

1. **Prepare** at ``data.image_size: 224``, ``--repeats`` times each, alternating, the fastest
   run counted: ``tuner``'s prepare (``prepare_data`` into a fresh cache folder, writing the
   1.5 GB of a 10k-image entry) with 1 and 2 processes, and the reference: torchvision's
   ``ImageFolder`` with ``Resize(224)`` + ``CenterCrop(224)`` + ``PILToTensor`` through
   ``DataLoader(num_workers=2, batch_size=64)``, decoding and resizing the same files once
   (and keeping nothing). Wall time of the work itself (after imports), images/s, peak
   anonymous memory, and its slope over the dataset sizes (a least-squares fit, MB per 1k
   images).
2. **One training epoch** (ResNet-18 from random init, batch 64, flips, as a trial runs it:
   training pass plus validation) at ``image_size`` 64 (the smallest dataset, all of it) and
   224 (64 images per class: 640, to keep the run short on a CPU), with
   ``train.data_on_device`` resident and ``never`` (streamed from the memory map), alternated
   ``--repeats`` times: images/s (training images over the epoch's seconds) and peak anonymous
   memory.

Goals (issue 12): prepare at least as fast as the DataLoader reference on the same cores;
anonymous memory flat in dataset size (slope under 5 MB per 1k images); the streamed epoch
within 10% of the resident one on the CPU. A benchmark, not a test: nothing is asserted; the
numbers are printed and, with --out, appended to that file.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import results_file

REPO = Path(__file__).resolve().parents[1]
CLASSES = 10
PHOTO = (320, 240)
_SAMPLE_SECONDS = 0.1


# --- the synthetic dataset -------------------------------------------------------------------


def _write_jpeg(job: tuple[Path, int]) -> None:
    """One 320x240 JPEG: a smooth colour field of its class plus noise (compresses like a photo)."""
    from PIL import Image

    path, seed = job
    rng = np.random.default_rng(seed)
    label = int(path.parent.name[1:])
    y, x = np.mgrid[0 : PHOTO[1], 0 : PHOTO[0]].astype(np.float32)
    angle = label * np.pi / CLASSES + rng.normal(0, 0.3)
    wave = np.sin((x * np.cos(angle) + y * np.sin(angle)) / rng.uniform(8, 30))
    base = rng.uniform(40, 200, 3)
    pixels = base + 50 * wave[..., None] + rng.normal(0, 12, (PHOTO[1], PHOTO[0], 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=88)


def write_dataset(root: Path, sizes: list[int]) -> dict[int, Path]:
    """Folders ``root/n<size>/c<k>/<i>.jpg``; the smaller sets hard-link the largest's files."""
    largest = max(sizes)
    full = root / f"n{largest}"
    jobs = [
        (full / f"c{i % CLASSES}" / f"{i:06d}.jpg", i)
        for i in range(largest)
        if not (full / f"c{i % CLASSES}" / f"{i:06d}.jpg").exists()
    ]
    for k in range(CLASSES):
        (full / f"c{k}").mkdir(parents=True, exist_ok=True)
    if jobs:
        print(f"writing {len(jobs)} JPEG files into {full} ...", flush=True)
        with Pool(os.cpu_count()) as pool:
            pool.map(_write_jpeg, jobs, chunksize=64)
    folders = {largest: full}
    for size in sizes:
        if size == largest:
            continue
        folder = root / f"n{size}"
        if not folder.is_dir():
            for i in range(size):
                source = full / f"c{i % CLASSES}" / f"{i:06d}.jpg"
                target = folder / source.parent.name / source.name
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(source, target)
        folders[size] = folder
    return folders


# --- measuring a child process ----------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):  # the task ended meanwhile
                queue += [int(c) for c in (task / "children").read_text().split()]
    return pids


def _anonymous_bytes(pid: int) -> int:
    """The tree's anonymous memory, each page counted once (Pss_Anon: a forked child's pages
    shared with its parent are split between them, not counted twice)."""
    total = 0
    for member in _tree(pid):
        try:
            for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss_Anon:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            pass
    return total


def measure(job: dict) -> dict:
    """Run ``job`` in a fresh process; its JSON result plus the tree's peak anonymous memory."""
    command = [sys.executable, __file__, "--child", json.dumps(job)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO)
    peak = 0
    while process.poll() is None:
        peak = max(peak, _anonymous_bytes(process.pid))
        time.sleep(_SAMPLE_SECONDS)
    out = process.stdout.read()
    if process.returncode != 0:
        raise SystemExit(f"benchmark job {job} failed ({process.returncode}):\n{out[-2000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    return {**result, "peak_anon_mb": peak / 1e6}


# --- the jobs, run in the child ---------------------------------------------------------------


def _data_config(folder: str, size: int, **keys: object):
    from tuner.config import DataConfig

    return DataConfig(source="folder", path=folder, image_size=size, **keys)


def _job_prepare(folder: str, processes: int, size: int) -> dict:
    from tuner.data.prepare import prepare_data

    cfg = _data_config(folder, size, prepare_workers=processes)
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache:
        started = time.perf_counter()
        data = prepare_data(cfg, Path(cache))
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "images": len(data.train_labels) + len(data.val_labels)}


def _job_reference(folder: str, workers: int, size: int) -> dict:
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [transforms.Resize(size), transforms.CenterCrop(size), transforms.PILToTensor()]
    )
    dataset = datasets.ImageFolder(folder, transform=transform)
    loader = DataLoader(dataset, batch_size=64, num_workers=workers)
    started = time.perf_counter()
    count = 0
    for images, _ in loader:
        assert images.dtype == torch.uint8
        count += len(images)
    return {"seconds": time.perf_counter() - started, "images": count}


def _job_epoch(folder: str, size: int, per_class: int | None, resident: bool, cache: str) -> dict:
    import torch

    from tuner.config import ResolvedWeights, TrainConfig
    from tuner.data.prepare import prepare_data
    from tuner.engine import TrainEnvironment, TrainHooks, build_model, train
    from tuner.recipe import TrialParams

    data = prepare_data(_data_config(folder, size, per_class=per_class), Path(cache))
    torch.manual_seed(0)
    model = build_model("resnet18", data.num_classes, ResolvedWeights.random_init())
    params = TrialParams(0, None, "all", 1e-3, 1e-3, "adam", 64, 1e-4)
    cfg = TrainConfig(epochs=1, device="cpu", eval_batch_size=128, lr_schedule="none")
    env = TrainEnvironment(torch.device("cpu"), 0, "flip", resident=resident)
    result = train(model, data, params, cfg, env, TrainHooks())
    return {"seconds": result.history[0].seconds, "images": len(data.train_labels)}


def _run_child(job: dict) -> None:
    kind = job.pop("kind")
    runner = {"prepare": _job_prepare, "reference": _job_reference, "epoch": _job_epoch}[kind]
    print(json.dumps(runner(**job)))


# --- the report --------------------------------------------------------------------------------


def _slope(sizes: list[int], peaks: list[float]) -> float:
    """MB per 1k images of a least-squares line through (size, peak)."""
    return float(np.polyfit(np.asarray(sizes) / 1000, peaks, 1)[0])


def run_prepare(folders: dict[int, Path], size: int, repeats: int) -> tuple[list[str], dict]:
    """Each peer on each dataset ``repeats`` times, the peers alternating; the fastest run of
    each counts (a first run can pay for pages the machine has not handed out yet)."""
    peers = {
        "tuner prepare, 1 process": {"kind": "prepare", "processes": 1},
        "tuner prepare, 2 processes": {"kind": "prepare", "processes": 2},
        "ImageFolder + DataLoader(num_workers=2)": {"kind": "reference", "workers": 2},
    }
    rows = ["| peer | images | seconds (best) | images/s | peak anonymous MB |"]
    rows.append("|---|---:|---:|---:|---:|")
    found: dict[str, list[dict]] = {name: [] for name in peers}
    for _, folder in sorted(folders.items()):
        runs: dict[str, list[dict]] = {name: [] for name in peers}
        for _ in range(repeats):
            for name, job in peers.items():
                runs[name].append(measure({**job, "folder": str(folder), "size": size}))
        for name, results in runs.items():
            best = min(results, key=lambda r: r["seconds"])
            best = {**best, "peak_anon_mb": max(r["peak_anon_mb"] for r in results)}
            found[name].append(best)
            rows.append(
                f"| {name} | {best['images']} | {best['seconds']:.1f} | "
                f"{best['images'] / best['seconds']:.0f} | {best['peak_anon_mb']:.0f} |"
            )
            print(rows[-1], flush=True)
    sizes = sorted(folders)
    rows += ["", "| peer | anonymous memory slope (MB per 1k images) |", "|---|---:|"]
    for name, results in found.items():
        rows.append(f"| {name} | {_slope(sizes, [r['peak_anon_mb'] for r in results]):.1f} |")
    return rows, found


def run_epochs(folder: Path, repeats: int, work: Path) -> tuple[list[str], dict]:
    settings = [(64, None), (224, 64)]
    rows = [
        "| image size | training images | data | images/s (each run) | median | peak anon. MB |",
        "|---:|---:|---|---|---:|---:|",
    ]
    medians: dict[tuple[int, str], float] = {}
    from tuner.data.prepare import prepare_data

    for size, per_class in settings:
        cache = work / f"cache-{size}"
        prepare_data(_data_config(str(folder), size, per_class=per_class), cache)  # not timed
        runs: dict[str, list[dict]] = {"resident": [], "streamed": []}
        for _ in range(repeats):
            for mode in ("resident", "streamed"):
                job = {"kind": "epoch", "folder": str(folder), "size": size}
                job |= {"per_class": per_class, "resident": mode == "resident"}
                runs[mode].append(measure({**job, "cache": str(cache)}))
        for mode, results in runs.items():
            rates = [r["images"] / r["seconds"] for r in results]
            medians[(size, mode)] = float(np.median(rates))
            peak = max(r["peak_anon_mb"] for r in results)
            rows.append(
                f"| {size} | {results[0]['images']} | {mode} | "
                f"{', '.join(f'{x:.1f}' for x in rates)} | {medians[(size, mode)]:.1f} | "
                f"{peak:.0f} |"
            )
            print(rows[-1], flush=True)
    return rows, medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="2500,5000,10000")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tuner-bench")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _run_child(json.loads(args.child))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    folders = write_dataset(args.work / "images", sizes)
    started = time.time()
    prepare_rows, prepared = run_prepare(folders, 224, args.repeats)
    epoch_work = args.work / "epochs"
    shutil.rmtree(epoch_work, ignore_errors=True)
    epoch_rows, medians = run_epochs(folders[min(sizes)], args.repeats, epoch_work)
    shutil.rmtree(epoch_work, ignore_errors=True)

    def rate(name: str) -> float:
        return max(r["images"] / r["seconds"] for r in prepared[name][-1:])

    fastest = rate("tuner prepare, 2 processes")
    reference = rate("ImageFolder + DataLoader(num_workers=2)")
    slopes = {
        name: _slope(sorted(folders), [r["peak_anon_mb"] for r in results])
        for name, results in prepared.items()
        if name.startswith("tuner")
    }
    gaps = {
        size: 1 - medians[(size, "streamed")] / medians[(size, "resident")] for size in (64, 224)
    }
    verdict = [
        f"* prepare vs the DataLoader reference (largest set, 2 processes each): {fastest:.0f} "
        f"vs {reference:.0f} images/s: goal {'met' if fastest >= reference else 'NOT met'}.",
        "* anonymous memory slope of tuner's prepare: "
        + ", ".join(f"{k}: {v:.1f} MB per 1k images" for k, v in slopes.items())
        + f": goal (< 5) {'met' if max(slopes.values()) < 5 else 'NOT met'}.",
        "* streamed vs resident epoch on the CPU (median images/s, streamed / resident): "
        + ", ".join(f"{s} px: {100 * (1 - g):.0f}%" for s, g in gaps.items())
        + f": goal (within 10%) {'met' if max(gaps.values()) <= 0.10 else 'NOT met'}.",
    ]
    header = [
        f"## Data at scale (issue 12), {datetime.date.today()}",
        "",
        f"`python bench/data_scale.py --sizes {args.sizes} --repeats {args.repeats}` on "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
        "default; 320x240 JPEGs, 10 classes; "
        f"{(time.time() - started) / 60:.0f} min.",
        "",
        "### Prepare at 224 px",
        "",
    ]
    text = "\n".join(
        [*header, *prepare_rows, "", "### One training epoch (ResNet-18, batch 64)", "",
         *epoch_rows, "", "### Goals", "", *verdict, ""]
    )  # fmt: skip
    print(text)
    results_file.append_run(args.out, text)


if __name__ == "__main__":
    main()
