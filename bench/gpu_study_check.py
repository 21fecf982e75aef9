"""Judge a finished `tuner search` by its study, read back with Optuna's API.

    python bench/gpu_study_check.py sqlite:///tuner.db --trials 6 [--study NAME] [--workers 2]

``tuner search`` exits 0 after "STOPPED EARLY" with every trial failed, and when crashed
workers used up their replacements, so ``bench/gpu_check.sh`` judges the study instead. It
passes only when:

* no trial is FAIL and none is still RUNNING;
* exactly ``--trials`` trials finished (COMPLETE + PRUNED): the budget, no more, no fewer;
* every trial's ``worker`` attribute names a CUDA device (``--device-has`` a given text
  too, e.g. "(GPU 1)"), and with ``--workers N`` exactly N worker processes ran them;
* where the workers record their peak GPU memory per trial (``cuda_peak_reserved_bytes``,
  ``torch.cuda.max_memory_reserved()`` over the trial), no worker's peak over its finished
  trials exceeds its first trial's by more than 5%; where they record none, the verdict
  says "NOT MEASURED".

Prints one line and exits 0 when it passes; prints one line naming the first failure and
exits 1 otherwise. Nothing here needs a GPU.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import optuna  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from tuner.run.device_memory import PEAK_ATTR  # noqa: E402
from tuner.search import attrs  # noqa: E402

MAX_GROWTH = 0.05


class Failed(Exception):
    """The study does not pass: the message is the one line to print."""


def _numbers(trials: list[FrozenTrial]) -> str:
    shown = ", ".join(f"#{t.number}" for t in trials[:5])
    return shown + (f" and {len(trials) - 5} more" if len(trials) > 5 else "")


def check_states(trials: list[FrozenTrial], budget: int) -> str:
    """The trials' states against the budget; what they were, as a phrase."""
    by_state = defaultdict(list)
    for trial in trials:
        by_state[trial.state].append(trial)
    running = by_state[TrialState.RUNNING]
    if running:
        raise Failed(
            f"trial(s) {_numbers(running)} still RUNNING (a worker died or the search was cut "
            "short)"
        )
    failed = by_state[TrialState.FAIL]
    if failed:
        reason = failed[0].user_attrs.get(attrs.FAIL_REASON, "no fail_reason recorded")
        raise Failed(
            f"{len(failed)} FAIL trial(s): {_numbers(failed)}; #{failed[0].number}: "
            f"{str(reason).splitlines()[0][:200]}"
        )
    complete, pruned = len(by_state[TrialState.COMPLETE]), len(by_state[TrialState.PRUNED])
    if complete + pruned != budget:
        raise Failed(
            f"{complete + pruned} finished trials ({complete} complete + {pruned} pruned), "
            f"the budget is {budget}"
        )
    return f"{budget} finished ({complete} complete, {pruned} pruned), no FAIL or RUNNING"


def check_workers(
    trials: list[FrozenTrial], device_has: str | None, workers: int | None
) -> dict[tuple, list[FrozenTrial]]:
    """Every trial ran on a CUDA device; the trials of each worker process, in order."""
    by_worker: dict[tuple, list[FrozenTrial]] = defaultdict(list)
    for trial in trials:
        owner = trial.user_attrs.get(attrs.WORKER)
        if not isinstance(owner, dict) or "device" not in owner:
            raise Failed(
                f"trial #{trial.number} records no {attrs.WORKER!r} attribute with a device"
            )
        device = str(owner["device"])
        if not device.startswith("cuda"):
            raise Failed(f"trial #{trial.number} ran on {device!r}, not a CUDA device")
        if device_has is not None and device_has not in device:
            raise Failed(
                f"trial #{trial.number} ran on {device!r}, which does not name {device_has!r}"
            )
        key = (owner.get("host"), owner.get("pid_namespace"), owner.get("pid"))
        by_worker[key].append(trial)
    if workers is not None and len(by_worker) != workers:
        raise Failed(
            f"{len(by_worker)} worker process(es) ran the trials, expected {workers} (a worker "
            "that never ran one, or crashed and was replaced)"
        )
    return by_worker


def check_memory(by_worker: dict[tuple, list[FrozenTrial]]) -> str:
    """Each worker's peak reserved GPU memory over its trials against its first trial's."""
    recorded = {
        key: [
            t.user_attrs[PEAK_ATTR]
            for t in sorted(trials, key=lambda t: t.number)
            if PEAK_ATTR in t.user_attrs
        ]
        for key, trials in by_worker.items()
    }
    if not any(recorded.values()):
        return f"peak GPU memory NOT MEASURED (the workers record no {PEAK_ATTR})"
    parts = []
    for (_, _, pid), peaks in recorded.items():
        if not peaks:
            raise Failed(f"worker pid {pid} recorded no {PEAK_ATTR} on its trials, others did")
        growth = max(peaks) / peaks[0] - 1 if peaks[0] else float("inf")
        text = (
            f"pid {pid}: {peaks[0] / 2**30:.2f} GiB after its first trial, "
            f"{max(peaks) / 2**30:.2f} GiB at most over {len(peaks)} ({100 * growth:+.0f}%)"
        )
        if growth > MAX_GROWTH:
            raise Failed(f"peak reserved GPU memory grew {100 * growth:.0f}% (> 5%), {text}")
        parts.append(text)
    return "peak reserved GPU memory per worker: " + "; ".join(parts)


def judge(
    study: optuna.Study,
    budget: int,
    device_has: str | None = None,
    workers: int | None = None,
) -> str:
    """The verdict line of a passing study; raises :class:`Failed` with the first failure."""
    trials = study.get_trials(deepcopy=False)
    states = check_states(trials, budget)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    by_worker = check_workers(finished, device_has, workers)
    devices = sorted({str(t.user_attrs[attrs.WORKER]["device"]) for t in finished})
    memory = check_memory(by_worker)
    return (
        f"study {study.study_name!r}: {states}; {len(by_worker)} worker(s) on "
        f"{', '.join(devices)}; {memory}"
    )


def load(storage: str, study_name: str | None) -> optuna.Study:
    """The study, without creating anything: a missing SQLite file is a failure, not a new DB."""
    url = storage if "://" in storage else f"sqlite:///{Path(storage).resolve()}"
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise Failed(f"no study database at {url.removeprefix('sqlite:///')}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        if study_name is None:
            names = optuna.get_all_study_names(url)
            if len(names) != 1:
                raise Failed(
                    f"{len(names)} studies in {storage} ({', '.join(names)}): give --study"
                )
            study_name = names[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.load_study(study_name=study_name, storage=url)
    except Failed:
        raise
    except Exception as exc:
        raise Failed(f"cannot read study {study_name!r} in {storage}: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("storage", help="the study's storage URL, or its SQLite file")
    parser.add_argument("--trials", type=int, required=True, help="the budget the search had")
    parser.add_argument("--study", help="study name (default: the only one in the storage)")
    parser.add_argument("--workers", type=int, help="worker processes that must have run trials")
    parser.add_argument("--device-has", help="text every trial's worker device must contain")
    args = parser.parse_args(argv)
    try:
        study = load(args.storage, args.study)
        print(f"passed: {judge(study, args.trials, args.device_has, args.workers)}")
        return 0
    except Failed as exc:
        print(f"FAILED: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
