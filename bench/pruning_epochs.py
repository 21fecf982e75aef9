"""Where a search's epochs go: per trial, and how many were spent on trials later pruned.

    python bench/pruning_epochs.py [--task default|fashion] [--seeds 0,1] [--trials 50]
                                   [--before 06de608|none] [--out FILE]

Runs the README's default search (`tuner search --trials N` on the built-in default study,
one worker; ``--task fashion``: on the real task of ``bench/anytime.py``, Fashion-MNIST
fine-tuned from ``bench/upstream.py``'s backbone) side by side for each seed, as each version
of tuner runs it:

* ``before``: the code at ``--before`` (a git worktree of that revision): Hyperband behind
  the wait-for-the-unfreeze wrapper, pruning allowed after a trial's last epoch;
* ``hyperband``: this tree with ``search.pruner=hyperband``: the same pruner, never asked
  after the last epoch;
* ``asha``: this tree's default, schedule-aware ASHA.

and reads every study back with Optuna's API: trials complete and pruned, epochs trained,
the share of them spent on trials that were pruned in the end, trials pruned after their
last epoch, the best val accuracy, and the wall time.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import results_file
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Search:
    variant: str
    seed: int
    seconds: float
    complete: int
    pruned: int
    epochs: int
    pruned_epochs: int  # trained by trials that ended pruned
    pruned_at_last: int  # trials pruned after their final epoch
    best: float

    @property
    def trials(self) -> int:
        return self.complete + self.pruned


def task_args(task: str) -> list[str]:
    """The --set options that make the built-in default study the task."""
    if task == "default":
        return []
    import upstream  # torch: only for the real task

    weights = upstream.build(upstream.UpstreamRecipe())
    cache = f"data.cache_dir={upstream.CACHE / 'data'}"
    return [arg for s in (*upstream.DOWNSTREAM, f"model.weights={weights}", cache)
            for arg in ("--set", s)]  # fmt: skip


def run(variant: str, tree: Path, seed: int, trials: int, extra: list[str]) -> Search:
    with tempfile.TemporaryDirectory(prefix=f"pruning-{variant}-") as folder:
        seeds = ["--set", f"search.seed={seed}", "--set", f"train.seed={seed}"]
        seeds += ["--set", "search.confirm_top=0"]  # the pruners' searches alone
        command = [sys.executable, "-m", "tuner.cli", "search", "--trials", str(trials)]
        command += [*seeds, *extra]
        env = {**os.environ, "PYTHONPATH": str(tree), "TUNER_PROGRESS_SECONDS": "60"}
        started = time.monotonic()
        subprocess.run(command, cwd=folder, env=env, check=True, capture_output=True)
        seconds = time.monotonic() - started
        study = optuna.load_study(study_name="default", storage=f"sqlite:///{folder}/tuner.db")
        finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
        epochs = study.user_attrs["tuner:config"]["train"]["epochs"]
        curve = {t.number: len(t.user_attrs.get("val_accuracy", [])) for t in finished}
        pruned = [t for t in finished if t.state == TrialState.PRUNED]
        return Search(
            variant, seed, seconds,
            complete=len(finished) - len(pruned), pruned=len(pruned),
            epochs=sum(curve.values()),
            pruned_epochs=sum(curve[t.number] for t in pruned),
            pruned_at_last=sum(curve[t.number] == epochs for t in pruned),
            best=study.best_value,
        )  # fmt: skip


def table(searches: list[Search]) -> str:
    lines = [
        "| variant | seed | trials (complete / pruned) | epochs | epochs per trial | epochs on "
        "trials later pruned | pruned after their last epoch | best val acc | wall time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in searches:
        lines.append(
            f"| {s.variant} | {s.seed} | {s.trials} ({s.complete} / {s.pruned}) | {s.epochs} | "
            f"{s.epochs / s.trials:.2f} | {s.pruned_epochs} ({s.pruned_epochs / s.epochs:.0%}) | "
            f"{s.pruned_at_last} | {s.best:.4f} | {s.seconds / 60:.1f} min |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="default", choices=("default", "fashion"))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument(
        "--before", default="06de608", help="git revision of the 'before' run; none: skip it"
    )
    parser.add_argument("--out", type=Path, help="append the table to this markdown file")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    task = task_args(args.task)
    with tempfile.TemporaryDirectory(prefix="pruning-before-") as before:
        variants = [
            ("hyperband", REPO, [*task, "--set", "search.pruner=hyperband"]),
            ("asha", REPO, task),
        ]
        if args.before != "none":
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", before,
                            args.before], check=True, capture_output=True)  # fmt: skip
            variants.insert(0, ("before", Path(before), task))
        try:
            searches = []
            for seed in seeds:
                for variant, tree, extra in variants:
                    searches.append(run(variant, tree, seed, args.trials, extra))
                    print(table(searches[-1:]).splitlines()[-1], flush=True)
        finally:
            if args.before != "none":
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                                before], check=False)  # fmt: skip
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"### Run of {when}: `tuner search --trials {args.trials}` on the {args.task} task, "
        f"seeds {args.seeds}; before = {args.before}\n\n{table(searches)}\n"
    )
    print(text)
    results_file.append_run(args.out, text)


if __name__ == "__main__":
    main()
