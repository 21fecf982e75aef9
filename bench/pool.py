"""Three studies one after another, each with its own workers, against the same three queued on
one pool (`tuner serve`): total wall time, worker idle time, and what a switch of study costs.

    python bench/pool.py [--workers 2] [--repeats 2] [--out bench/RESULTS.md]

The studies are the tiny digits study at three sizes (4, 8 and 12 trials of one epoch), so
what is measured is the search machinery, not the training. (a) runs `tuner search STUDY
--workers W` three times in a row; (b) queues the three (`tuner search --queue`) and runs one
`tuner serve --workers W --idle-exit`. Wall time is from the first command's start to the last
trial's end (the pool's idle-exit wait after its last trial is left out, and counted apart).
Worker idle time is W x that wall time minus the seconds the trials ran. A switch is a worker
going from its last trial of one study to its first of another; its cost is the gap between
those two trials minus the median gap between two trials of one study on one worker. Each
repeat runs (a) and (b) in turn in fresh folders, on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import optuna  # noqa: E402
import results_file  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

STUDY = """
data: {source: digits, per_class: 20, image_size: 16}
model: {arch: resnet18, weights: none}
train: {epochs: 1, eval_batch_size: 128}
space: {unfreeze_epoch: never, warmup_epochs: 0, batch_size: 32}
search: {pruner: none, baselines: false, confirm_top: 0}
"""
SIZES = {"small": 4, "medium": 8, "large": 12}
IDLE_EXIT_MINUTES = 0.1


@dataclass(frozen=True)
class Outcome:
    """One way of running the three studies, measured."""

    how: str
    wall: float  # first command's start to the last trial's end, seconds
    trial_seconds: float  # the trials' own seconds, summed
    workers: int
    switch_costs: tuple[float, ...] = ()
    tail: float = 0.0  # after the last trial: the pool's idle-exit wait, the searches' summaries

    @property
    def idle(self) -> float:
        return self.workers * self.wall - self.trial_seconds


def tuner(folder: Path, *args: str) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name in ("TUNER_STORAGE", "TUNER_ARTIFACTS"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "tuner.cli", *args], cwd=folder, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"tuner {' '.join(args)} failed:\n{done.stderr[-2000:]}")


def trials(folder: Path) -> list[tuple[str, FrozenTrial]]:
    """Every finished trial of the three studies in ``folder``'s storage, with its study."""
    storage = f"sqlite:///{folder / 'tuner.db'}"
    found = []
    for name in SIZES:
        study = optuna.load_study(study_name=name, storage=storage)
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        found += [(name, t) for t in finished]
    return found


def one_after_another(folder: Path, workers: int) -> Outcome:
    started = datetime.datetime.now()
    clock = time.monotonic()
    for name, size in SIZES.items():
        tuner(folder, "search", "study.yaml", "--study", name, "--trials", str(size),
              "--workers", str(workers))  # fmt: skip
    return _outcome("one after another, own workers", folder, workers, started, clock)


def one_pool(folder: Path, workers: int) -> Outcome:
    started = datetime.datetime.now()
    clock = time.monotonic()
    for name, size in SIZES.items():
        tuner(folder, "search", "study.yaml", "--study", name, "--trials", str(size), "--queue")
    tuner(folder, "serve", "--workers", str(workers), "--idle-exit", f"{IDLE_EXIT_MINUTES:g}")
    return _outcome("queued on one pool", folder, workers, started, clock)


def _outcome(
    how: str, folder: Path, workers: int, started: datetime.datetime, clock: float
) -> Outcome:
    found = trials(folder)
    assert len(found) == sum(SIZES.values()), f"{how}: {len(found)} trials finished"
    last = max(t.datetime_complete for _, t in found)
    wall = (last - started).total_seconds()
    ran = sum((t.datetime_complete - t.datetime_start).total_seconds() for _, t in found)
    return Outcome(how, wall, ran, workers, switch_costs(found), time.monotonic() - clock - wall)


def switch_costs(found: list[tuple[str, FrozenTrial]]) -> tuple[float, ...]:
    """Per switch of study on one worker: its gap between trials minus the median gap between
    two trials of one study on one worker."""
    by_worker: dict[str, list[tuple[str, FrozenTrial]]] = {}
    for name, t in found:
        by_worker.setdefault(t.user_attrs["worker"]["worker"], []).append((name, t))
    same, switches = [], []
    for mine in by_worker.values():
        mine.sort(key=lambda found: found[1].datetime_start)
        for (study, before), (next_study, after) in itertools.pairwise(mine):
            gap = (after.datetime_start - before.datetime_complete).total_seconds()
            (same if study == next_study else switches).append(gap)
    base = statistics.median(same) if same else 0.0
    return tuple(gap - base for gap in switches)


def table(outcomes: list[Outcome]) -> str:
    lines = [
        "| how | runs | wall to the last trial (s) | worker idle (s) | idle share | "
        "switches | cost per switch (s) | after the last trial (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for how in dict.fromkeys(o.how for o in outcomes):
        mine = [o for o in outcomes if o.how == how]
        walls = [o.wall for o in mine]
        idles = [o.idle for o in mine]
        share = statistics.mean(o.idle / (o.workers * o.wall) for o in mine)
        costs = [c for o in mine for c in o.switch_costs]
        cost = f"{statistics.median(costs):.1f}" if costs else "-"
        lines.append(
            f"| {how} | {len(mine)} | {_spread(walls)} | {_spread(idles)} | {share:.0%} | "
            f"{len(costs) / len(mine):.1f} | {cost} | {_spread([o.tail for o in mine])} |"
        )
    return "\n".join(lines)


def _spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, help="append the table to this markdown file")
    args = parser.parse_args()
    outcomes = []
    for repeat in range(args.repeats):
        for run in (one_after_another, one_pool):
            with tempfile.TemporaryDirectory(prefix="pool-bench-") as tmp:
                folder = Path(tmp)
                (folder / "study.yaml").write_text(STUDY)
                outcomes.append(run(folder, args.workers))
                o = outcomes[-1]
                print(f"pool bench: repeat {repeat + 1}/{args.repeats}, {o.how}: wall "
                      f"{o.wall:.1f} s, idle {o.idle:.1f} s, {len(o.switch_costs)} switches",
                      flush=True)  # fmt: skip
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join([
        f"## Pool against one search after another ({when})", "",
        f"Command: `python bench/pool.py --workers {args.workers} --repeats {args.repeats}`; "
        f"three tiny digits studies of {', '.join(map(str, SIZES.values()))} one-epoch trials; "
        "mean (min-max) over the repeats.", "", table(outcomes), "",
    ])  # fmt: skip
    print(text)
    results_file.append_run(args.out, text)


if __name__ == "__main__":
    main()
