"""`tuner search` on a GPU, judged by its study: the mini search, an out-of-memory trial, a mask.

    python bench/gpu_search_check.py mini    # --gpus 0 --per-gpu 2, 6 trials of 2 epochs
    python bench/gpu_search_check.py oom     # a trial that runs out of memory, then one that fits
    python bench/gpu_search_check.py masked  # CUDA_VISIBLE_DEVICES=1 tuner search --gpus 0

Each runs ``python -m tuner.cli search`` in a fresh folder on scikit-learn's digits (20 per
class: 200 images, 8x8 scaled up; random init), then reads the study back with Optuna's
API (``gpu_study_check.judge``): the exit status of ``tuner search`` alone passes after
"STOPPED EARLY" with every trial failed.

* **mini**: two workers share GPU 0; all trials have one memory footprint (batch size,
  optimizer, freeze depth and extras fixed, only rates and the like searched; 128 px, so the
  peak is near 1 GiB), so a worker's peak GPU memory in its first trial is what every later
  trial should need too.
* **oom**: the study is created here with two queued trials of one ResNet-50 at 288 px,
  batch 100 then batch 4, while this process holds all but 3 GiB of the GPU; then one
  ``--gpus 0`` worker runs them. The first must FAIL with "out of memory" in its reason,
  the second COMPLETE in the same worker process.
* **masked**: on a machine with two GPUs or more, ``CUDA_VISIBLE_DEVICES=1 tuner search
  --gpus 0`` must run on physical GPU 1: read from ``nvidia-smi`` while it runs (GPU 1's
  memory in use rises, GPU 0's does not) and from the trials' worker device ("(GPU 1)").

Prints the search's last lines, then one line: "passed: ..." or "FAILED: ...".
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import gpu_study_check  # noqa: E402
import optuna  # noqa: E402
from gpu_study_check import Failed  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from tuner.search import attrs  # noqa: E402

SAME_FOOTPRINT = [  # with a fixed batch size, every trial needs the same GPU memory
    "space.freeze_depth=0",
    "space.unfreeze_epoch=never",
    "space.warmup_epochs=0",
    "space.optimizer=sgd",
    "space.ema=0.0",
    "space.mixup=0.0",
    "space.cutmix=0.0",
]
OOM_BATCH, FIT_BATCH = 100, 4
LEAVE_FREE = 3 << 30  # bytes of GPU memory the oom check leaves to the worker (and launcher)
T = TypeVar("T")


def base_sets(work: Path) -> list[str]:
    """A study on the built-in digits (scikit-learn's, no download): 20 per class, 200 images."""
    return [
        "data.source=digits",
        "data.per_class=20",
        f"data.cache_dir={work / 'cache'}",
        "model.weights=none",
        "search.baselines=false",
        "search.confirm_top=0",
    ]


def run_search(work: Path, args: list[str], timeout: float, env: dict[str, str]) -> str:
    """``tuner search ARGS`` in ``work``; the failure of its exit status, else "".

    The search runs in a process group of its own (the launcher and its workers), which is
    stopped as a whole (TERM, then KILL) if it outlives ``timeout`` or this check is stopped,
    so that no worker goes on holding the GPU into the next step.
    """
    log = work / "search.log"
    command = [sys.executable, "-m", "tuner.cli", "search", *args]
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    child_env = {**os.environ, **env, "PYTHONPATH": path}
    code = None
    with log.open("w") as out:
        process = subprocess.Popen(
            command, cwd=work, env=child_env, stdout=out, stderr=out, start_new_session=True
        )
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if code is None:
                _stop_group(process)
    lines = log.read_text(errors="replace").splitlines()
    for line in lines[-15:]:
        print(f"  | {line}", flush=True)
    last = lines[-1].strip() if lines else "no output"
    if code is None:
        return f"tuner search did not end within {timeout:.0f} s (last line: {last[:200]})"
    return "" if code == 0 else f"tuner search exited {code} (last line: {last[:200]})"


def judged(exited: str, verdict: Callable[[], T]) -> T:
    """``verdict()``, failing with the search's own failure (``exited``) first when it has one:
    the study says what went wrong, the exit status that something did."""
    try:
        result = verdict()
    except Failed as exc:
        raise Failed(f"{exited}; {exc}" if exited else str(exc)) from None
    if exited:
        raise Failed(f"{exited}; the study: {result}")
    return result


def _stop_group(process: subprocess.Popen) -> None:
    """TERM the search's process group (the launcher stops its workers), KILL what is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(2)  # gpu_check.sh's own KILL comes 3 s after its TERM
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def url_of(work: Path) -> str:
    return f"sqlite:///{work / 'tuner.db'}"


def check_mini(work: Path, timeout: float) -> str:
    # 128 px and one batch of all 120 training images: a peak near 1 GiB, so that the
    # allocator's 2 and 20 MiB blocks stay well inside the 5% it may grow by
    sets = [*base_sets(work), "data.image_size=128", "train.epochs=2", "space.batch_size=128"]
    sets += SAME_FOOTPRINT
    args = ["--gpus", "0", "--per-gpu", "2", "--trials", "6", "--study", "mini"]
    args += ["--storage", url_of(work), *(a for s in sets for a in ("--set", s))]
    exited = run_search(work, args, timeout, {})
    study = judged(exited, lambda: gpu_study_check.load(url_of(work), "mini"))
    return "--gpus 0 --per-gpu 2: " + judged(
        exited, lambda: gpu_study_check.judge(study, 6, workers=2)
    )


@contextlib.contextmanager
def gpu_held_but(leave: int) -> Iterator[int]:
    """Hold all of GPU 0's free memory but ``leave`` bytes in this process; yields what it holds."""
    import torch

    free, _ = torch.cuda.mem_get_info()
    ballast = torch.empty(max(0, free - leave), dtype=torch.uint8, device="cuda")
    try:
        yield ballast.numel()
    finally:
        del ballast
        torch.cuda.empty_cache()


def check_oom(work: Path, timeout: float) -> str:
    from tuner.run.driver import open_search
    from tuner.run.request import SearchRequest

    sets = [*base_sets(work), "data.image_size=288", "train.epochs=1", "train.eval_batch_size=16"]
    sets += [
        *SAME_FOOTPRINT,
        "space.arch=resnet50",
        f"space.batch_size={{choices: [{FIT_BATCH}, {OOM_BATCH}]}}",
    ]
    os.chdir(work)  # where open_search keeps tuner-logs/
    request = SearchRequest(None, tuple(sets), study="oom", trials=1, storage=url_of(work))
    study = open_search(request, lambda line: None).pinned.study
    study.enqueue_trial({"batch_size": OOM_BATCH})
    study.enqueue_trial({"batch_size": FIT_BATCH})
    args = ["--study", "oom", "--storage", url_of(work), "--gpus", "0", "--per-gpu", "1"]
    with gpu_held_but(LEAVE_FREE) as held:
        print(f"holding {held / 2**30:.1f} GiB of GPU 0, leaving {LEAVE_FREE >> 30} GiB free")
        exited = run_search(work, args, timeout, {})
    return judged(exited, lambda: judge_oom(gpu_study_check.load(url_of(work), "oom")))


def judge_oom(study: optuna.Study) -> str:
    """Trial of OOM_BATCH: FAIL, out of memory; then one of FIT_BATCH: COMPLETE, same worker."""
    trials = study.get_trials(deepcopy=False)
    batch = {t.number: t.params.get("batch_size") for t in trials}
    big = [t for t in trials if batch[t.number] == OOM_BATCH]
    small = [t for t in trials if batch[t.number] == FIT_BATCH]
    if len(big) != 1:
        raise Failed(f"expected one trial of batch {OOM_BATCH}, the trials' batches: {batch}")
    big = big[0]
    reason = str(big.user_attrs.get(attrs.FAIL_REASON, ""))
    if big.state != TrialState.FAIL or "out of memory" not in reason.lower():
        raise Failed(
            f"trial #{big.number} (batch {OOM_BATCH}) is {big.state.name}, not FAIL "
            f"for out of memory (reason: {reason[:200] or 'none'})"
        )
    if len(small) != 1:
        raise Failed(f"expected one trial of batch {FIT_BATCH} run after #{big.number}: {batch}")
    small = small[0]
    if small.state != TrialState.COMPLETE or small.number < big.number:
        raise Failed(
            f"trial #{small.number} (batch {FIT_BATCH}) is {small.state.name} after "
            f"the out-of-memory trial #{big.number}, not COMPLETE"
        )
    pids = [t.user_attrs.get(attrs.WORKER, {}).get("pid") for t in (big, small)]
    if pids[0] is None or pids[0] != pids[1]:
        raise Failed(
            f"the trial after the out-of-memory one ran in worker pid {pids[1]}, the "
            f"out-of-memory one in {pids[0]}: the worker did not survive it"
        )
    return (
        f"trial #{big.number} (resnet50, batch {OOM_BATCH}) FAIL: {reason[:160]}; trial "
        f"#{small.number} (batch {FIT_BATCH}) COMPLETE in the same worker, pid {pids[0]}"
    )


class GpuMemory:
    """Samples each physical GPU's memory in use (``nvidia-smi``) on a thread: the most seen."""

    def __init__(self) -> None:
        self.baseline = self._read()
        self.most = dict(self.baseline)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def _read() -> dict[int, int]:
        query = ["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"]
        out = subprocess.run(query, capture_output=True, text=True, check=True, timeout=10)
        rows = (line.split(",") for line in out.stdout.strip().splitlines())
        return {int(index): int(used) for index, used in rows}

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
                for index, used in self._read().items():
                    self.most[index] = max(self.most.get(index, 0), used)

    def __enter__(self) -> GpuMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def rise(self, index: int) -> int:
        """MiB in use on GPU ``index`` at most, above what it was before."""
        return self.most.get(index, 0) - self.baseline.get(index, 0)


def check_masked(work: Path, timeout: float) -> str:
    sets = [*base_sets(work), "train.epochs=1", "space.batch_size=32", *SAME_FOOTPRINT]
    args = ["--gpus", "0", "--per-gpu", "1", "--trials", "2", "--study", "masked"]
    args += ["--storage", url_of(work), *(a for s in sets for a in ("--set", s))]
    with GpuMemory() as memory:
        exited = run_search(work, args, timeout, {"CUDA_VISIBLE_DEVICES": "1"})
    seen = f"GPU 0 +{memory.rise(0)} MiB, GPU 1 +{memory.rise(1)} MiB in use"
    if memory.rise(0) >= 256 or memory.rise(1) < 256:
        raise Failed(f"CUDA_VISIBLE_DEVICES=1 --gpus 0 did not run on physical GPU 1 alone: {seen}")
    study = judged(exited, lambda: gpu_study_check.load(url_of(work), "masked"))
    verdict = judged(
        exited, lambda: gpu_study_check.judge(study, 2, device_has="(GPU 1)", workers=1)
    )
    return f"CUDA_VISIBLE_DEVICES=1 --gpus 0 ran on physical GPU 1 ({seen}); {verdict}"


CHECKS = {"mini": check_mini, "oom": check_oom, "masked": check_masked}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("check", choices=sorted(CHECKS))
    parser.add_argument("--timeout", type=float, default=60, help="seconds for tuner search (60)")
    args = parser.parse_args(argv)
    # stopped by gpu_check.sh's timeout: unwind, so that the search's group is stopped too
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    work = Path(tempfile.mkdtemp(prefix=f"gpu-{args.check}-"))
    print(f"work folder: {work}", flush=True)
    try:
        print(f"passed: {CHECKS[args.check](work, args.timeout)}")
        return 0
    except Failed as exc:
        print(f"FAILED: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
