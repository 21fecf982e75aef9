"""Learning curves of tuner's default space on the real task, recorded once for the replay.

    python bench/replay_curves.py [--recipes 150] [--work bench/runs/replay]

Recipes 0, 1 and 2 are tuner's classic recipes; recipe k from 3 on is a random recipe of the
default space (Optuna's RandomSampler seeded with k, so recipe k is the same recipe in every
session). Each trains all 4 epochs with tuner's own engine on ``bench/upstream.py``'s
downstream task (Fashion-MNIST, 5 classes, 500 training and 125 validation photos each),
from its upstream backbone, seeded with k, as one worker runs a trial: on two threads, frozen
stages cached while frozen. Per epoch it records the validation accuracy, the frozen depth,
and the wall and CPU seconds from one epoch's end to the next (training, the feature cache's
fill, validation); per recipe, the test accuracy of the best epoch on the 5,000 official test
photos (and which ones it got right, for paired tests).

``--replicates R`` trains each of the first ``--replicated`` recipes R - 1 more times from
other seeds (``WORK/replicates/<k>-<r>.json``): their spread is the noise a search sees when
it runs one recipe once, which the replay adds to the surrogate's answers.

One file per recipe, ``WORK/curves/<k>.json``, tracked: a stopped recording resumes where it
was and a later session re-analyses without training anything. WORK is
``bench/runs/replay/upstream-<sha>`` by default, one per upstream build (named by its weights'
sha256): the build is bit-identical on one kind of CPU but not across kinds, so curves of two
builds are two recordings, never mixed. ``WORK/PAUSE`` holds it
between recipes (a test run beside it would skew its seconds). Wall seconds are true only on
an otherwise idle machine; CPU seconds are recorded too, so the replay's cost model can
check the one against the other.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import anytime  # noqa: E402
import optuna  # noqa: E402
import upstream  # noqa: E402

from tuner import stats  # noqa: E402
from tuner.config import StudyConfig, load_config  # noqa: E402
from tuner.data import PreparedData  # noqa: E402
from tuner.engine import EpochMetrics, TrainHooks, file_sha256  # noqa: E402
from tuner.progress import duration  # noqa: E402
from tuner.recipe import TrialParams  # noqa: E402
from tuner.search.space import sample  # noqa: E402

RECORDINGS = REPO / "bench" / "runs" / "replay"
REPLICATE_SEEDS = 100_000
"""Replicate r of recipe k trains from seed k + REPLICATE_SEEDS * r (r = 0: the recording)."""


def recording_of(weights: str) -> Path:
    """The folder of the curves recorded from the upstream build in ``weights``."""
    return RECORDINGS / f"upstream-{build_id(weights)}"


def recordings() -> list[Path]:
    """Every recording, the one with the most recipes first."""
    found = [p for p in RECORDINGS.glob("upstream-*") if (p / "curves").is_dir()]
    return sorted(found, key=lambda p: -len(list((p / "curves").glob("*.json"))))


def largest_recording() -> Path:
    """The recording with the most recipes: what the replay reads unless told otherwise."""
    if not recordings():
        raise SystemExit(f"replay: no recording in {RECORDINGS}: run bench/replay_curves.py")
    return recordings()[0]


def other_recording(work: Path) -> Path | None:
    """The largest recording besides ``work`` (another upstream build): an earlier study of a
    closely related task, for the replay's warm starts; None when there is none."""
    return next((p for p in recordings() if p.resolve() != work.resolve()), None)


def best_recipes(work: Path, top: int) -> tuple[dict, ...]:
    """The Optuna params of the ``top`` sampled recipes of a recording with the best observed
    val accuracy (the classic recipes, which every search runs anyway, left out)."""
    sampled = [c for c in load_curves(work) if c["optuna"]]
    ranked = sorted(sampled, key=lambda c: -max(e["val"] for e in c["epochs"]))
    return tuple(c["optuna"] for c in ranked[:top])


def task_config() -> StudyConfig:
    """The downstream task's config: its space and its 4-epoch training settings."""
    return load_config(None, list(upstream.DOWNSTREAM))


def recipe(k: int) -> tuple[str, TrialParams, dict]:
    """Recipe ``k``: (name, the recipe, its Optuna params), the same in every session."""
    config = task_config()
    classic = upstream.classic_recipes()
    if k < len(classic):
        name, params = classic[k]
        return name, params, {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=k))
    trial = study.ask()
    params = sample(trial, config.space, config.train.epochs)
    return f"random-{k}", params, dict(trial.params)


class EpochClock:
    """Wall and CPU seconds from the run's start to each epoch's end, as the hook sees it."""

    def __init__(self) -> None:
        self.epochs: list[dict] = []
        self._wall, self._cpu = time.monotonic(), time.process_time()

    def __call__(self, metrics: EpochMetrics) -> bool:
        wall, cpu = time.monotonic(), time.process_time()
        self.epochs.append({
            "val": metrics.val_accuracy, "frozen_depth": metrics.frozen_depth,
            "wall": round(wall - self._wall, 3), "cpu": round(cpu - self._cpu, 3),
        })  # fmt: skip
        self._wall, self._cpu = wall, cpu
        return False


def build_id(weights: str) -> str:
    """The first 8 hex digits of the weights file's sha256 (a named weight spec as it is)."""
    return file_sha256(Path(weights))[:8] if Path(weights).is_file() else weights


def record(k: int, data: PreparedData, weights: str, replicate: int = 0) -> dict:
    """Train recipe ``k`` all its epochs; its curve, costs and test predictions. Replicate r
    trains the same recipe from seed ``k + REPLICATE_SEEDS * r``."""
    name, params, optuna_params = recipe(k)
    clock = EpochClock()
    seed = k + REPLICATE_SEEDS * replicate
    result, model = upstream.fine_tune(
        data, params, weights, seed, upstream.DOWNSTREAM, TrainHooks(on_epoch=clock)
    )
    correct = upstream.test_correct(model, data)
    return {
        "k": k, "replicate": replicate, "name": name, "recipe": dataclasses.asdict(params),
        "optuna": optuna_params,
        "epochs": clock.epochs, "best_epoch": result.best_epoch,
        "test": float(correct.mean()), "test_correct": stats.pack_correct(correct),
        "test_images": len(correct), "machine": anytime.cpu(),
        "upstream": build_id(weights),
    }  # fmt: skip


def load_curves(work: Path) -> list[dict]:
    """Every recorded recipe, by number."""
    return sorted(
        (json.loads(p.read_text()) for p in (work / "curves").glob("*.json")),
        key=lambda c: c["k"],
    )


def curve_path(work: Path, k: int, replicate: int) -> Path:
    """``curves/<k>.json`` for the recording, ``replicates/<k>-<r>.json`` for replicate r."""
    if replicate == 0:
        return work / "curves" / f"{k:04d}.json"
    return work / "replicates" / f"{k:04d}-{replicate}.json"


def load_replicates(work: Path) -> list[list[dict]]:
    """The runs of each recipe that was trained more than once (its recording first)."""
    runs: dict[int, list[dict]] = {}
    for path in sorted((work / "replicates").glob("*.json")):
        found = json.loads(path.read_text())
        runs.setdefault(found["k"], []).append(found)
    return [[json.loads(curve_path(work, k, 0).read_text()), *more]
            for k, more in sorted(runs.items()) if curve_path(work, k, 0).is_file()]  # fmt: skip


def record_all(recipes: int, work: Path | None, replicates: int = 1, replicated: int = 30) -> None:
    """Record recipes 0..``recipes``-1, and ``replicates`` - 1 more runs of each of the first
    ``replicated``, that are not recorded yet, with progress lines. ``work`` None: this
    machine's upstream build's recording."""
    weights = str(upstream.build(upstream.UpstreamRecipe()))
    work = work or recording_of(weights)
    print(f"replay_curves: recording in {work}", flush=True)
    data = upstream.downstream_data()
    plan = [(k, 0) for k in range(recipes)]
    plan += [(k, r) for r in range(1, replicates) for k in range(min(replicated, recipes))]
    todo = [(k, r) for k, r in plan if not curve_path(work, k, r).is_file()]
    spent, best = 0.0, max((c["test"] for c in load_curves(work)), default=0.0)
    for done, (k, replicate) in enumerate(todo, 1):
        anytime.wait_while_paused(work)
        started = time.monotonic()
        found = record(k, data, weights, replicate)
        spent += time.monotonic() - started  # the rate leaves pauses out
        path = curve_path(work, k, replicate)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_suffix(".tmp").write_text(json.dumps(found))
        path.with_suffix(".tmp").rename(path)
        best = max(best, found["test"])
        rate = spent / done
        curve = " ".join(f"{e['val']:.3f}" for e in found["epochs"])
        print(
            f"replay_curves: {done}/{len(todo)} recipe {k} ({found['name']}, replicate "
            f"{replicate}): val {curve}, "
            f"test {found['test']:.4f}, {sum(e['wall'] for e in found['epochs']):.0f} s; "
            f"{rate:.0f} s/recipe, ETA {duration(rate * (len(todo) - done))}; "
            f"best test so far {best:.4f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", type=int, default=150, help="record recipes 0..N-1")
    parser.add_argument("--replicates", type=int, default=1, help="runs of each replicated one")
    parser.add_argument("--replicated", type=int, default=30, help="recipes 0..N-1 replicated")
    parser.add_argument("--work", type=Path, help="where curves/ is kept (default: per build)")
    args = parser.parse_args()
    record_all(args.recipes, args.work, args.replicates, args.replicated)


if __name__ == "__main__":
    main()
