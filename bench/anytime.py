"""Anytime: best validation accuracy against wall-clock, `tuner search` beside its peers.

    python bench/anytime.py [--tasks default,transfer] [--seeds 3] [--budget 120]
                            [--work DIR] [--out bench/RESULTS.md] [--plot PNG]

Every searcher gets the same wall-clock budget per run (its clock starts when its process
does, imports and start-up included), on the same task, split and space, one at a time on
this machine's cores, for each seed; runs alternate between searchers so that a slow spell
of the machine hits them alike. The searchers:

* ``tuner``: `tuner search` with its defaults (schedule-aware ASHA);
* ``tuner-hyperband``: `tuner search` with Optuna's plain HyperbandPruner;
* ``optuna``, ``top_third``, ``ray``, ``reference``: see ``bench/peers.py``.

Three tasks: ``default``, tuner's default study (digits at 32 px, random init offline);
``transfer``: the bench first pretrains a ResNet-18 briefly on digits 0-4 and every searcher
fine-tunes it on digits 5-9 (``model.weights``), so that freezing means transfer; the bench
checks that it does (feature extraction from the pretrained backbone must beat feature
extraction from random init); and ``fashion``, the real one: five Fashion-MNIST classes, 500
training photos each, fine-tuned from the ResNet-18 that ``bench/upstream.py`` pretrains on the
other five (its downstream checks are in ``bench/upstream.py check``), tested on all 5,000
official test photos of those classes. Each searcher hands back one model (tuner: ``tuner
export-best``); only then are the held-out test images read, for that model alone.

With ``--work DIR`` every finished run is kept in ``DIR/runs/<task>-<searcher>-<seed>/``
(``run.json``) and a rerun with the same DIR skips it: a long race resumes where it stopped;
``DIR/race.json`` keeps its budget and tasks, and ``--analyse DIR`` writes the results of
whatever runs DIR holds (both files are tracked: a later session re-analyses from a clone).

Ray Tune runs in an environment of the bench's own (``bench/.ray-venv``, made on first use,
``pip install "ray[tune]"``), never in the package's dependencies.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import peers  # noqa: E402
import results_file  # noqa: E402
import torch  # noqa: E402
import upstream  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from tuner import stats  # noqa: E402
from tuner.config import load_config  # noqa: E402
from tuner.data import cache_path, prepare_data  # noqa: E402
from tuner.recipe import TrialParams  # noqa: E402
from tuner.results import load_model  # noqa: E402

RAY_VERSION = "2.60.0"
RAY_ENV = REPO / "bench" / ".ray-venv"
SEARCHERS = ("tuner", "tuner-hyperband", "optuna", "ray", "top_third", "reference")
HYPERBAND = ["--set", "search.pruner=hyperband", "--set", "search.prune_after_unfreeze=false"]
PRETRAIN_CLASSES, TARGET_CLASSES = "[0,1,2,3,4]", "[5,6,7,8,9]"
PRETRAIN_EPOCHS = 6
CHECK_SEEDS = 3
GRACE = 30.0  # seconds a searcher gets to stop after its budget before it is killed


@dataclass(frozen=True)
class TaskSetup:
    name: str
    folder: Path  # data.pt and task.json for the peers, png/ for the reference
    tuner_args: tuple[str, ...]  # the --set options that make `tuner search` this task
    test_x: torch.Tensor
    test_y: torch.Tensor
    note: str  # what the bench checked about the task


@dataclass(frozen=True)
class Run:
    searcher: str
    task: str
    seed: int
    curve: tuple[tuple[float, float], ...]  # (seconds since start, best val accuracy so far)
    test_correct: np.ndarray | None  # the handed-back model on the test images
    trials: int | None = None  # trials started within the budget (None: not recorded then)

    def best_at(self, seconds: float) -> float:
        reached = [value for t, value in self.curve if t <= seconds]
        return max(reached) if reached else float("nan")

    def time_to(self, target: float, budget: float) -> float:
        """Seconds to reach ``target`` (inf if never within the budget). Accuracies agree to
        float32: tuner's are float32 means, the peers' exact fractions of the same images."""
        reached = (t for t, value in self.curve if value >= target - 1e-6 and t <= budget)
        return next(reached, np.inf)


# --- the tasks --------------------------------------------------------------------------------


def prepare_task(name: str, work: Path, sets: list[str], weights: str | None) -> TaskSetup:
    """Prepare a task's data with tuner (the same pixels and split for everyone)."""
    cache = work / "cache"
    config = load_config(None, [*sets, f"data.cache_dir={cache}"])
    data = prepare_data(config.data, cache_path(config.data), with_test=True)
    folder = work / name
    args = tuple(arg for s in [*sets, f"data.cache_dir={cache}"] for arg in ("--set", s))
    setup = TaskSetup(name, folder, args, data.test_images.clone(), data.test_labels.clone(), "")
    if (folder / "task.json").is_file():  # a resumed race: written by an earlier run
        return setup
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"train_x": data.train_images.clone(), "train_y": data.train_labels.clone(),
         "val_x": data.val_images.clone(), "val_y": data.val_labels.clone()},
        folder / "data.pt",
    )  # fmt: skip
    meta = {"num_classes": data.num_classes, "epochs": config.train.epochs, "weights": weights}
    for side, images, labels in (
        ("train", data.train_images, data.train_labels),
        ("val", data.val_images, data.val_labels),
    ):
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            path = folder / "png" / side / class_folder(int(label), data.class_names) / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
    (folder / "task.json").write_text(json.dumps(meta))  # last: the task is complete
    return setup


def class_folder(label: int, names: tuple[str, ...]) -> str:
    """An ImageFolder name that sorts as the label does and is one path part ("T-shirt/top"
    would nest a folder, and "10" sorts before "2"), so the reference reads the true labels."""
    return f"{label:03d}-" + names[label].replace("/", "-")


def pretrain(work: Path) -> Path:
    """ResNet-18 from random init, briefly trained on digits 0-4: the transfer task's start."""
    path = work / "pretrained-digits-0-4.safetensors"
    if path.is_file():
        return path
    sets = [f"data.classes={PRETRAIN_CLASSES}", "search.study=pretrain"]
    source = prepare_task("pretrain", work, sets, None)
    task = peers.Task.load(source.folder)
    params = TrialParams(0, None, "all", 1e-2, 1e-2, "sgd", 64, 1e-4)  # SGD, momentum 0.9
    run = peers.TensorTrial(task, params, seed=0, state=None)
    for _ in range(PRETRAIN_EPOCHS):
        run.train_epoch()
    save_file({k: v.contiguous() for k, v in run.model.state_dict().items()}, str(path))
    return path


def feature_extraction_accuracy(task: TaskSetup, weights: str | None) -> float:
    """Mean val accuracy over seeds of a head trained on a frozen backbone (the task's epochs,
    Adam 1e-3): does the starting backbone transfer to the target classes at all?"""
    loaded = peers.Task.load(task.folder)
    loaded = peers.Task(**{**loaded.__dict__, "weights": weights})
    params = TrialParams(5, None, "all", 1e-3, None, "adam", 32, 1e-6)
    found = []
    for seed in range(CHECK_SEEDS):
        run = peers.TensorTrial(loaded, params, seed=seed, state=loaded.start_state())
        for _ in range(loaded.epochs):
            run.train_epoch()
        found.append(run.best)
    return float(np.mean(found))


TASKS = ("default", "transfer", "fashion")


def prepare_tasks(work: Path, names: tuple[str, ...]) -> list[TaskSetup]:
    """The tasks asked for, in ``TASKS``' order."""
    makers = {"default": _default_task, "transfer": _transfer_task, "fashion": _fashion_task}
    return [makers[name](work) for name in TASKS if name in names]


def _default_task(work: Path) -> TaskSetup:
    return prepare_task("default", work, ["search.study=anytime"], None)


def _fashion_task(work: Path) -> TaskSetup:
    """The real task: ``upstream.DOWNSTREAM`` from the upstream backbone (built if missing)."""
    recipe = upstream.UpstreamRecipe()
    weights = str(upstream.build(recipe))
    _same_build(work, hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:8])
    sets = [*upstream.DOWNSTREAM, f"model.weights={weights}", "search.study=anytime"]
    task = prepare_task("fashion", work, sets, weights)
    note = (
        f"Fashion-MNIST: {', '.join(upstream.DOWNSTREAM_CLASSES)}; 500 training and 125 "
        f"validation photos per class, tested on all {len(task.test_y)} official test photos of "
        f"these classes; every searcher starts from the ResNet-18 `bench/upstream.py` pretrained "
        f"on the other five classes ({recipe.name}; its checks in bench/RESULTS.md)."
    )
    return TaskSetup(**{**task.__dict__, "note": note})


def _same_build(work: Path, build: str) -> None:
    """A race's runs all fine-tune one upstream build: the build differs between CPU kinds
    (and hosts), so a work folder remembers its build and refuses another."""
    kept = work / "upstream-build.txt"
    if kept.exists() and kept.read_text().strip() != build:
        raise SystemExit(
            f"{work}: its runs fine-tuned upstream build {kept.read_text().strip()}; this machine "
            f"built {build}. Runs on other weights do not mix: give another --work."
        )
    work.mkdir(parents=True, exist_ok=True)
    kept.write_text(build + "\n")


def _transfer_task(work: Path) -> TaskSetup:
    weights = str(pretrain(work))
    sets = [f"data.classes={TARGET_CLASSES}", f"model.weights={weights}", "search.study=anytime"]
    transfer = prepare_task("transfer", work, sets, weights)
    pretrained, scratch = (feature_extraction_accuracy(transfer, w) for w in (weights, None))
    note = (
        f"Transfer check: feature extraction on digits 5-9 (4 epochs, head only, mean of "
        f"{CHECK_SEEDS} seeds) reaches {pretrained:.3f} val accuracy from the backbone pretrained "
        f"{PRETRAIN_EPOCHS} epochs on digits 0-4 (SGD, lr 0.01) and {scratch:.3f} from random "
        "init: "
        + ("the task measures transfer." if pretrained > scratch else "NO TRANSFER: check it.")
    )
    print(note, flush=True)
    return TaskSetup(**{**transfer.__dict__, "note": note})


# --- running the searchers --------------------------------------------------------------------


def ray_python() -> Path:
    """The bench's own Ray environment, which sees this environment's packages (torch, tuner)."""
    python = RAY_ENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(RAY_ENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"ray[tune]=={RAY_VERSION}"], check=True
        )
        site = subprocess.run(
            [str(python), "-c", "import site; print(site.getsitepackages()[0])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        ours = next(p for p in sys.path if p.endswith("site-packages"))
        Path(site, "bench-main-env.pth").write_text(f"{ours}\n{REPO}\n")
    return python


def _run_process(command: list[str], cwd: Path, budget: float, log: Path) -> float:
    """Start ``command``, stop it (SIGTERM, then SIGKILL) at the budget; its start time."""
    started = time.time()
    env = {**os.environ, "BENCH_T0": str(started), "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        process.wait(timeout=budget)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return started


def run_tuner(task: TaskSetup, seed: int, budget: float, extra: list[str], folder: Path) -> Run:
    """`tuner search --minutes` with the run's budget (it stops starting trials in time for its
    confirm), stopped like a peer if it runs 5 s over; its export is the confirmed winner only
    where every confirm run ended within the budget, else the search's best trial."""
    name = "tuner" if not extra else "tuner-hyperband"
    command = [sys.executable, "-m", "tuner.cli", "search", *task.tuner_args, "--trials", "100000",
               "--minutes", f"{budget / 60:.4f}", "--set", f"search.seed={seed}",
               "--set", f"train.seed={seed}", *extra]  # fmt: skip
    started = _run_process(command, folder, budget + 5, folder / "search.log")
    storage = f"sqlite:///{folder / 'tuner.db'}"
    study = optuna.load_study(study_name="anytime", storage=storage)
    curve, best = [], -1.0
    trials = len(study.get_trials(deepcopy=False))
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    for trial in sorted(complete, key=lambda t: t.datetime_complete):
        if trial.value > best and trial.datetime_complete.timestamp() - started <= budget:
            best = trial.value
            curve.append((trial.datetime_complete.timestamp() - started, best))
    chosen = []  # export-best's default: the confirmed winner
    if complete and not _confirmed_in_time(storage, started + budget):
        chosen = ["--trial", str(min(complete, key=lambda t: (-t.value, t.number)).number)]
    export = subprocess.run(
        [sys.executable, "-m", "tuner.cli", "export-best", "--out", "best", *chosen],
        cwd=folder, capture_output=True, text=True,
    )  # fmt: skip
    correct = None
    if export.returncode == 0:
        correct = _test_correct(load_model(folder / "best").model, task)
    return Run(name, task.name, seed, tuple(curve), correct, trials)


def _confirmed_in_time(storage: str, ends: float) -> bool:
    """Whether the search's confirm study exists and every one of its runs ended by ``ends``."""
    if "anytime-confirm" not in optuna.get_all_study_names(storage):
        return False
    runs = optuna.load_study(study_name="anytime-confirm", storage=storage).get_trials()
    return bool(runs) and all(
        r.state == optuna.trial.TrialState.COMPLETE and r.datetime_complete.timestamp() <= ends
        for r in runs
    )


def run_peer(name: str, task: TaskSetup, seed: int, budget: float, folder: Path) -> Run:
    python = ray_python() if name == "ray" else Path(sys.executable)
    command = [str(python), str(REPO / "bench" / "peers.py"), name, "--task", str(task.folder),
               "--seed", str(seed), "--budget", str(budget), "--work", str(folder)]  # fmt: skip
    _run_process(command, folder, budget + (GRACE if name == "ray" else 5), folder / "peer.log")
    lines = (
        (folder / "best.jsonl").read_text().splitlines() if (folder / "best.jsonl").exists() else []
    )
    curve = tuple((r["t"], r["value"]) for r in map(json.loads, lines))
    correct = None
    if (folder / "best.pt").exists():
        model = peers.reference_search.new_model(None, int(task.test_y.max()) + 1)
        model.load_state_dict(torch.load(folder / "best.pt", weights_only=True))
        correct = _test_correct(model, task)
    counted = folder / "trials.json"
    trials = json.loads(counted.read_text())["started"] if counted.exists() else None
    return Run(name, task.name, seed, curve, correct, trials)


@torch.no_grad()
def _test_correct(model: torch.nn.Module, task: TaskSetup) -> np.ndarray:
    model.eval()
    images = (task.test_x.float() / 255 - peers.MEAN) / peers.STD
    return (model(images).argmax(1) == task.test_y).numpy()


def run_all(tasks: list[TaskSetup], seeds: int, budget: float, work: Path) -> list[Run]:
    runs = []
    total = len(tasks) * seeds * len(SEARCHERS)
    for task in tasks:
        for seed in range(seeds):
            order = SEARCHERS[seed % len(SEARCHERS) :] + SEARCHERS[: seed % len(SEARCHERS)]
            for name in order:
                folder = work / "runs" / f"{task.name}-{name}-{seed}"
                kept = _kept_run(folder)
                if kept is None:
                    wait_while_paused(work)
                runs.append(kept or _fresh_run(name, task, seed, budget, folder))
                run = runs[-1]
                best = run.best_at(budget)
                print(f"[{len(runs)}/{total}] {task.name} {name} seed {seed}: best {best:.4f}, "
                      f"{len(run.curve)} improvements", flush=True)  # fmt: skip
    return runs


def wait_while_paused(work: Path) -> None:
    """Before a run, wait while ``WORK/PAUSE`` exists: other work on the machine (tests, a
    build) slows a wall-clock race, so it waits for the running search to end instead."""
    pause = work / "PAUSE"
    if pause.exists():
        print(f"paused before the next run: remove {pause} to go on", flush=True)
    while pause.exists():
        time.sleep(5)


def _fresh_run(name: str, task: TaskSetup, seed: int, budget: float, folder: Path) -> Run:
    """One searcher's run from scratch (what an interrupted one left is removed), kept in
    ``folder/run.json`` once it has finished."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if name.startswith("tuner"):
        extra = HYPERBAND if name == "tuner-hyperband" else []
        run = run_tuner(task, seed, budget, extra, folder)
    else:
        run = run_peer(name, task, seed, budget, folder)
    (folder / "run.json").write_text(json.dumps(_run_record(run)))
    return run


def _kept_run(folder: Path) -> Run | None:
    """The run an earlier invocation finished in ``folder``, if any, and if it still counts.

    A wall-clock race does not mix machines: a run from another CPU stops the race. A tuner
    run made with other defaults than this tree's is run again (said on a line).
    """
    path = folder / "run.json"
    if not path.is_file():
        return None
    item = json.loads(path.read_text())
    if item.get("machine", cpu()) != cpu():
        raise SystemExit(
            f"{path}: ran on {item['machine']}; this machine is {cpu()}. A wall-clock race does "
            "not mix machines: give another --work."
        )
    if item["searcher"].startswith("tuner") and item.get("defaults") != defaults_digest():
        print(f"{folder.name}: made with other tuner defaults; running it again", flush=True)
        return None
    return _run_from(item)


def defaults_digest() -> str:
    """A short digest of tuner's built-in default config: a tuner run is kept only under it."""
    from tuner.config import load_config, to_yaml

    return hashlib.sha256(to_yaml(load_config(None)).encode()).hexdigest()[:12]


# --- what it found ----------------------------------------------------------------------------


def summarise(runs: list[Run], tasks: dict[str, str], budget: float) -> str:
    """The tables, per task (``tasks``: name -> what the bench checked about it)."""
    lines = []
    for task, note in tasks.items():
        mine = [r for r in runs if r.task == task]
        by = {name: [r for r in mine if r.searcher == name] for name in SEARCHERS}
        finals = {name: _median_best(rs, budget) for name, rs in by.items()}
        lines += [f"### Task `{task}`", ""]
        if note:
            lines += [note, ""]
        lines += [
            "| searcher | best val at the budget: median [range] | its own time to that median "
            "| trials started: median [range] | test accuracy of its winner: median [range] "
            "| tuner vs it on test (pooled over seeds, exact McNemar) |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for name, rs in by.items():
            at_budget = [r.best_at(budget) for r in rs]
            own = _median_time(rs, finals[name], budget)
            tests = [r.test_correct.mean() for r in rs if r.test_correct is not None]
            versus = _versus_tuner(by["tuner"], rs) if name != "tuner" else "-"
            lines.append(
                f"| {name} | {_spread(at_budget)} | {_seconds(own)} | {_counts(rs)} "
                f"| {_spread(tests)} | {versus} |"
            )
        lines += ["", "Time for tuner to reach each peer's final median best, against the peer's "
                  "own time to reach it (goal: at most half):", "",
                  "| peer | its final median best | peer's time | tuner's time | ratio | goal |",
                  "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for name in SEARCHERS[1:]:
            theirs = _median_time(by[name], finals[name], budget)
            ours = _median_time(by["tuner"], finals[name], budget)
            lines.append(
                f"| {name} | {finals[name]:.4f} | {_seconds(theirs)} | {_seconds(ours)} | "
                f"{_half_time_verdict(ours, theirs)} |"
            )
        if task == "fashion":
            lines += ["", *_versus_classic(by["tuner"])]
        lines.append("")
    return "\n".join(lines)


def _versus_classic(tuner_runs: list[Run]) -> list[str]:
    """Goal (b) of the real task: does the searched recipe beat each classic recipe on test?
    tuner's winner of race seed s against the classic recipe's check run of seed s (the same
    5,000 test photos), pooled over the seeds both have."""
    lines = [
        "The searched recipe against the classic recipes (their runs in `bench/upstream.py "
        "check`, same test photos, paired by seed):", "",
        "| classic recipe | its test accuracy: median [range] | tuner's winner vs it (pooled, "
        "exact McNemar) |",
        "| --- | --- | --- |",
    ]  # fmt: skip
    winners = {r.seed: r.test_correct for r in tuner_runs if r.test_correct is not None}
    for name, runs in upstream.classic_test_correct(upstream.UpstreamRecipe()).items():
        seeds = [s for s in sorted(winners) if s < len(runs)]
        tests = [c.mean() for c in runs]
        versus = "n/a"
        if seeds:
            ours = np.concatenate([winners[s] for s in seeds])
            theirs = np.concatenate([runs[s] for s in seeds])
            comparison = stats.PairedComparison.of(ours, theirs)
            versus = f"{comparison.points:+.1f} points ({comparison.evidence()}, seeds {seeds})"
        lines.append(f"| {name} | {_spread(tests)} | {versus} |")
    return lines


def _spread(values: list[float]) -> str:
    """ "median [min, max]" of the runs that have a value, and how many did not."""
    found = [v for v in values if np.isfinite(v)]
    if not found:
        return "none"
    missing = f" ({len(values) - len(found)} run(s) with none)" if len(found) < len(values) else ""
    return f"{np.median(found):.4f} [{min(found):.4f}, {max(found):.4f}]{missing}"


def _counts(runs: list[Run]) -> str:
    """ "median [min, max]" of the trials started, over the runs that recorded them."""
    counts = [r.trials for r in runs if r.trials is not None]
    if not counts:
        return "not recorded"
    uncounted = len(runs) - len(counts)
    missing = f" ({uncounted} run(s) before counting)" if uncounted else ""
    return f"{np.median(counts):.0f} [{min(counts)}, {max(counts)}]{missing}"


def _half_time_verdict(ours: float, theirs: float) -> str:
    """The "ratio | goal" cells: tuner's time over the peer's, met at half or less. A peer that
    never reaches its own median best (with an even number of seeds the median lies between
    two runs) gives no time to halve: n/a, not met."""
    if not np.isfinite(theirs):
        return "n/a | NOT met (the peer's median time is never: an even number of seeds?)"
    ratio = ours / theirs if np.isfinite(ours) and theirs > 0 else np.inf
    return f"{ratio:.2f} | {'met' if ratio <= 0.5 else 'NOT met'}"


def _median_best(runs: list[Run], budget: float) -> float:
    """The median over seeds of the best at the budget; a run with none counts as 0."""
    return float(np.median([np.nan_to_num(r.best_at(budget)) for r in runs]))


def _median_time(runs: list[Run], target: float, budget: float) -> float:
    """The median over seeds of the seconds to reach ``target`` (inf for a run that never did)."""
    return float(np.median([r.time_to(target, budget) for r in runs]))


def _versus_tuner(tuner_runs: list[Run], runs: list[Run]) -> str:
    pairs = [(a, b) for a in tuner_runs for b in runs if a.seed == b.seed]
    pairs = [(a, b) for a, b in pairs if a.test_correct is not None and b.test_correct is not None]
    if not pairs:
        return "n/a"
    a = np.concatenate([a.test_correct for a, _ in pairs])
    b = np.concatenate([b.test_correct for _, b in pairs])
    comparison = stats.PairedComparison.of(a, b)
    return f"{comparison.points:+.1f} points ({comparison.evidence()})"


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if np.isfinite(value) else "never"


def plot(runs: list[Run], tasks: dict[str, str], budget: float, path: Path) -> None:
    grid = np.linspace(0, budget, 241)
    figure, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        for name in SEARCHERS:
            mine = [r for r in runs if r.task == task and r.searcher == name]
            curves = np.array([[r.best_at(t) for t in grid] for r in mine])
            if not len(curves):
                continue
            with warnings.catch_warnings():  # before a searcher's first result: all NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                low, median, high = (
                    f(curves, axis=0) for f in (np.nanmin, np.nanmedian, np.nanmax)
                )
            line = axis.plot(grid, median, label=name, lw=2.2 if name == "tuner" else 1.4)[0]
            axis.fill_between(grid, low, high, color=line.get_color(), alpha=0.12)
        finals = [_median_best([r for r in runs if r.task == task and r.searcher == name], budget)
                  for name in SEARCHERS]  # fmt: skip
        top = min(1.0, max(finals) + 0.03)
        axis.set_ylim(max(0.0, min(finals) - 0.06), top)  # where the searchers differ
        axis.set_title(f"task {task}: best val accuracy so far (median, range over seeds)")
        axis.set_xlabel("seconds since the searcher started")
        axis.set_ylabel("best val accuracy")
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def machine() -> str:
    return f"{cpu()}, Ray {RAY_VERSION}"


def cpu() -> str:
    """E.g. "2 cores (AMD EPYC 7B13), torch 2.14.1"."""
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    name = next((line.split(":", 1)[1].strip() for line in lines if "model name" in line), "?")
    return f"{os.cpu_count()} cores ({name}), torch {torch.__version__}"


RACE_FILE = "race.json"
"""A work folder's race: its budget, machine and tasks (with what the bench checked about
each); with the runs' own ``run.json`` it is all ``--analyse WORK`` needs (both are tracked)."""


def run_and_record(args: argparse.Namespace) -> dict:
    """Every run, kept in ``WORK``: ``race.json`` first, each finished run's ``run.json``."""
    started = time.monotonic()
    work = (args.work or Path(tempfile.mkdtemp(prefix="tuner-anytime-"))).resolve()  # runs cd
    tasks = prepare_tasks(work, args.tasks)
    keep_race(work, args.budget, {task.name: task.note for task in tasks})
    runs = run_all(tasks, args.seeds, args.budget, work)
    print(f"runs kept in {work}")
    record = load_race(work)
    return {**record, "minutes": (time.monotonic() - started) / 60,
            "runs": [_run_record(r) for r in runs]}  # fmt: skip


def keep_race(work: Path, budget: float, notes: dict[str, str]) -> None:
    """Write (or extend with new tasks) ``WORK/race.json``; a race resumes only with its own
    budget: runs of another budget would be compared as if alike."""
    path = work / RACE_FILE
    race = json.loads(path.read_text()) if path.exists() else {"budget": budget, "tasks": {}}
    if race["budget"] != budget:
        raise SystemExit(
            f"{path}: this race runs --budget {race['budget']:g}, not {budget:g}: give that "
            "budget or another --work."
        )
    race.setdefault("machine", machine())
    race["tasks"] = {**race["tasks"], **notes}
    path.write_text(json.dumps(race, indent=1))


def load_race(work: Path) -> dict:
    """The race kept in ``work`` as far as it has run: ``race.json`` and every finished run."""
    path = work / RACE_FILE
    if not path.is_file():
        raise SystemExit(f"{path}: not found; --analyse takes a race's --work folder.")
    race = json.loads(path.read_text())
    runs = [json.loads(p.read_text()) for p in sorted((work / "runs").glob("*/run.json"))]
    runs = [item for item in runs if item["task"] in race["tasks"]]
    return {
        **race, "runs": runs, "minutes": None,
        "when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seeds": len({item["seed"] for item in runs}),
    }  # fmt: skip


def _run_record(run: Run) -> dict:
    test = run.test_correct
    return {
        "searcher": run.searcher, "task": run.task, "seed": run.seed, "curve": run.curve,
        "test": None if test is None else {"bits": stats.pack_correct(test), "images": len(test)},
        "trials": run.trials, "machine": cpu(),
        **({"defaults": defaults_digest()} if run.searcher.startswith("tuner") else {}),
    }  # fmt: skip


def _run_from(item: dict) -> Run:
    test = item["test"]
    correct = None if test is None else stats.unpack_correct(test["bits"], test["images"])
    curve = tuple((t, value) for t, value in item["curve"])
    return Run(item["searcher"], item["task"], item["seed"], curve, correct, item.get("trials"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tasks", type=lambda text: tuple(text.split(",")), default=("default", "transfer"),
        help=f"comma-separated, of {', '.join(TASKS)} (default: default,transfer)",
    )  # fmt: skip
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=float, default=120.0, help="seconds per run")
    parser.add_argument("--out", type=Path, help="append the results to this markdown file")
    parser.add_argument("--plot", type=Path, default=REPO / "bench" / "anytime.png")
    parser.add_argument("--work", type=Path, help="keep the runs here (default: a temp folder)")
    parser.add_argument(
        "--analyse", type=Path, metavar="WORK", help="only the results of the runs kept in WORK"
    )
    args = parser.parse_args()
    if args.analyse:
        record = load_race(args.analyse)
    else:
        ray_python()  # made (and its install timed) before any run, not during one
        record = run_and_record(args)
    runs = [_run_from(item) for item in record["runs"]]
    plot(runs, record["tasks"], record["budget"], args.plot)
    took = "" if record["minutes"] is None else f", {record['minutes']:.0f} min in all"
    text = "\n".join([
        f"### Run of {record['when']}: {record['seeds']} seeds x {record['budget']:.0f} s per "
        f"run{took}",
        "", f"Machine: {record['machine']}.", "",
        summarise(runs, record["tasks"], record["budget"]),
        f"![best val accuracy against wall-clock]({args.plot.name})", "",
    ])  # fmt: skip
    print(text)
    results_file.append_run(args.out, text)


if __name__ == "__main__":
    main()
