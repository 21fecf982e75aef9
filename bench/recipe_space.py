"""The wider recipe space against today's, and the model soup against the best single trial.

    python bench/recipe_space.py [--seeds 3] [--budget 120] [--out bench/RESULTS.md]
    python bench/recipe_space.py --analyse WORK   # the tables of a finished run again

On the two tasks of ``bench/anytime.py`` (``default``: digits at 32 px from random init;
``transfer``: digits 5-9 from a ResNet-18 pretrained on digits 0-4), `tuner search` runs with
the same wall-clock budget in three spaces, one run at a time, alternating the order per seed:

* ``today``: the space before the recipe dimensions (layer decay 1, no warm-up, no label
  smoothing, no EMA, no mixing, BatchNorm statistics trained);
* ``default``: the built-in default, which also searches layer decay, warm-up, label
  smoothing and EMA;
* ``wide``: the default plus mixup, cutmix and the BatchNorm policy (what
  ``studies/imagefolder.yaml`` searches, less the arch: the transfer task's pretrained weights
  are a ResNet-18 file, and a file fits one arch).

After each search, `tuner export-best` hands back the best single trial and `tuner
export-best --soup 3` the greedy soup of the top 3; only then are the test images read, once
per model. Differences are exact McNemar tests on the same test images, pooled over seeds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import anytime  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import results_file  # noqa: E402

from tuner import stats  # noqa: E402
from tuner.results import load_model  # noqa: E402

TODAY = [
    "space.layer_decay=1.0", "space.warmup_epochs=0", "space.label_smoothing=0.0",
    "space.ema=0.0", "space.mixup=0.0", "space.cutmix=0.0", "space.bn_policy=train",
]  # fmt: skip
WIDE = ["space.mixup={choices: [0.0, 0.2]}", "space.cutmix={choices: [0.0, 1.0]}",
        "space.bn_policy={choices: [train, freeze_stats]}"]  # fmt: skip
SPACES = {"today": TODAY, "default": [], "wide": WIDE}
SOUP = 3


@dataclass(frozen=True)
class Run:
    space: str
    task: str
    seed: int
    best_val: float  # the search's best validation accuracy within the budget
    trials: int  # finished trials within the budget
    single: np.ndarray | None  # the best trial's model on the test images: correct or not
    soup: np.ndarray | None  # the soup's
    ingredients: int  # trials the greedy soup kept


def run_search(task: anytime.TaskSetup, space: str, seed: int, budget: float, folder: Path) -> Run:
    sets = [arg for s in SPACES[space] for arg in ("--set", s)]
    command = [sys.executable, "-m", "tuner.cli", "search", *task.tuner_args, *sets,
               "--trials", "100000", "--set", f"search.seed={seed}",
               "--set", f"train.seed={seed}"]  # fmt: skip
    anytime._run_process(command, folder, budget, folder / "search.log")
    study = optuna.load_study(study_name="anytime", storage=f"sqlite:///{folder / 'tuner.db'}")
    finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    pruned = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
    best = max((t.value for t in finished), default=float("nan"))
    single = _exported(task, folder, ["--out", "best"])
    soup = _exported(task, folder, ["--out", "soup", "--soup", str(SOUP)])
    ingredients = 0
    if (folder / "soup" / "config.json").exists():
        recorded = json.loads((folder / "soup" / "config.json").read_text())["soup"]
        ingredients = len(recorded["ingredients"])
    return Run(space, task.name, seed, best, len(finished) + len(pruned), single, soup, ingredients)


def _exported(task: anytime.TaskSetup, folder: Path, args: list[str]) -> np.ndarray | None:
    done = subprocess.run(
        [sys.executable, "-m", "tuner.cli", "export-best", *args],
        cwd=folder, capture_output=True, text=True,
    )  # fmt: skip
    (folder / f"export{len(args)}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        return None
    return anytime._test_correct(load_model(folder / args[1]).model, task)


def run_all(tasks: list[anytime.TaskSetup], seeds: int, budget: float, work: Path) -> list[Run]:
    runs: list[Run] = []
    names = list(SPACES)
    total = len(tasks) * seeds * len(names)
    for task in tasks:
        for seed in range(seeds):
            for space in names[seed % len(names) :] + names[: seed % len(names)]:
                folder = work / "runs" / f"{task.name}-{space}-{seed}"
                run = _kept_run(folder) or _fresh_run(task, space, seed, budget, folder, work)
                runs.append(run)
                print(
                    f"[{len(runs)}/{total}] {task.name} {space} seed {seed}: best val "
                    f"{run.best_val:.4f} in {run.trials} trials; test single "
                    f"{_mean(run.single)}, soup {_mean(run.soup)} ({run.ingredients} kept)",
                    flush=True,
                )
    return runs


def _fresh_run(
    task: anytime.TaskSetup, space: str, seed: int, budget: float, folder: Path, work: Path
) -> Run:
    """One search from scratch (what an interrupted one left is removed), kept in
    ``folder/run.json`` once finished, so a stopped bench resumes where it was."""
    anytime.wait_while_paused(work)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    run = run_search(task, space, seed, budget, folder)
    (folder / "run.json").write_text(json.dumps(_run_record(run)))
    return run


def _kept_run(folder: Path) -> Run | None:
    path = folder / "run.json"
    return _run_from(json.loads(path.read_text())) if path.is_file() else None


def _mean(correct: np.ndarray | None) -> str:
    return "n/a" if correct is None else f"{correct.mean():.4f}"


def _pooled(runs: list[Run], field: str) -> np.ndarray | None:
    found = [getattr(r, field) for r in sorted(runs, key=lambda r: r.seed)]
    return None if any(f is None for f in found) or not found else np.concatenate(found)


def _versus(a: np.ndarray | None, b: np.ndarray | None) -> str:
    if a is None or b is None:
        return "n/a"
    comparison = stats.PairedComparison.of(a, b)
    return f"{comparison.points:+.1f} points ({comparison.evidence()})"


def _spread(values: list[float], digits: int = 4) -> str:
    found = [v for v in values if np.isfinite(v)]
    if not found:
        return "none"
    return f"{np.median(found):.{digits}f} [{min(found):.{digits}f}, {max(found):.{digits}f}]"


def summarise(runs: list[Run], tasks: dict[str, str]) -> str:
    lines = []
    for task, note in tasks.items():
        mine = {s: [r for r in runs if r.task == task and r.space == s] for s in SPACES}
        lines += [f"### Task `{task}`", ""] + ([note, ""] if note else [])
        lines += [
            "| space | finished trials | best val: median [range] | test, best single | "
            f"test, soup of {SOUP} | soup kept | soup vs single (test, pooled) | "
            "single vs `today`'s single (test, pooled) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        today = _pooled(mine["today"], "single")
        for space, rs in mine.items():
            single, soup = _pooled(rs, "single"), _pooled(rs, "soup")
            tests = [r.single.mean() for r in rs if r.single is not None]
            soups = [r.soup.mean() for r in rs if r.soup is not None]
            versus_today = "-" if space == "today" else _versus(single, today)
            lines.append(
                f"| {space} | {_spread([r.trials for r in rs], 0)} | "
                f"{_spread([r.best_val for r in rs])} | {_spread(tests)} | {_spread(soups)} | "
                f"{', '.join(str(r.ingredients) for r in rs)} | {_versus(soup, single)} | "
                f"{versus_today} |"
            )
        lines.append("")
    return "\n".join(lines)


RUNS_FILE = "runs.json"


def run_and_record(args: argparse.Namespace) -> dict[str, Any]:
    """Every run, kept in ``WORK/runs.json`` (``--analyse WORK`` reads it back)."""
    started = time.monotonic()
    work = (args.work or Path(tempfile.mkdtemp(prefix="tuner-recipes-"))).resolve()  # runs cd
    tasks = anytime.prepare_tasks(work, args.tasks)
    runs = run_all(tasks, args.seeds, args.budget, work)
    record = {
        "when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": f"python bench/recipe_space.py --seeds {args.seeds} --budget "
        f"{args.budget:g} --spaces {args.spaces}",
        "machine": anytime.cpu(),
        "minutes": (time.monotonic() - started) / 60,
        "work": str(work),
        "tasks": {t.name: t.note for t in tasks},
        "runs": [_run_record(r) for r in runs],
    }  # fmt: skip
    (work / RUNS_FILE).write_text(json.dumps(record))
    return record


def _run_record(r: Run) -> dict[str, Any]:
    return {
        "space": r.space, "task": r.task, "seed": r.seed, "best_val": r.best_val,
        "trials": r.trials, "ingredients": r.ingredients,
        **{f: None if getattr(r, f) is None else
           {"bits": stats.pack_correct(getattr(r, f)), "images": len(getattr(r, f))}
           for f in ("single", "soup")},
    }  # fmt: skip


def _run_from(item: dict[str, Any]) -> Run:
    correct = {
        f: None if item[f] is None else stats.unpack_correct(item[f]["bits"], item[f]["images"])
        for f in ("single", "soup")
    }
    return Run(item["space"], item["task"], item["seed"], item["best_val"], item["trials"],
               correct["single"], correct["soup"], item["ingredients"])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tasks", type=lambda text: tuple(text.split(",")), default=("default", "transfer"),
        help=f"comma-separated, of {', '.join(anytime.TASKS)} (default: default,transfer)",
    )  # fmt: skip
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=float, default=120.0, help="seconds per search")
    parser.add_argument("--work", type=Path, help="folder for the runs (default: a temp dir)")
    parser.add_argument("--out", type=Path, help="append the results to this markdown file")
    parser.add_argument("--spaces", default=",".join(SPACES), help="which spaces, comma-separated")
    parser.add_argument(
        "--analyse", type=Path, metavar="WORK", help="only write the results of a finished run"
    )
    args = parser.parse_args()
    for name in set(SPACES) - set(args.spaces.split(",")):
        del SPACES[name]
    if args.analyse:
        record = json.loads((args.analyse / RUNS_FILE).read_text())
    else:
        record = run_and_record(args)
    runs = [_run_from(item) for item in record["runs"]]
    text = (
        f"## Recipe space and soups ({record['when']})\n\n"
        f"Command: `{record['command']}`; machine: {record['machine']}; "
        f"{record['minutes']:.0f} minutes; runs kept in {record['work']}.\n\n"
        + summarise(runs, record["tasks"])
    )
    print(text)
    results_file.append_run(args.out, text)


if __name__ == "__main__":
    main()
