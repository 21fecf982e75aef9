"""Searchers replayed on a surrogate of the real task: many seeds in minutes, simulated time.

    python bench/replay.py [--seeds 30] [--budget 40] [--workers 1,4,8] [--out bench/RESULTS.md]

The task is ``bench/replay_curves.py``'s record of the default space on the real downstream
task, answered for any recipe by ``bench/replay_surrogate.py``. Each searcher is real Optuna:
its sampler asks for recipes of tuner's default space (``tuner.search.space.sample``, classic
recipes enqueued where tuner enqueues them), each trial reports the surrogate's epochs one by
one to its real pruner and stops where the pruner says, and a simulated clock charges each
epoch its cost under the ``cpu`` or the ``gpu`` cost model. Workers are asynchronous: a free
worker asks for a new trial at once, the trials still running stay RUNNING in the study (so
constant liar and the pruners see them, as in a real study).

The budget is ``--budget`` full fine-tuning trials' worth of compute (a full trial's seconds
under each cost model), shared by the workers: the same total compute at every worker count.
A searcher hands back the complete trial with the best observed value (``tuner export-best
--trial best``); the confirm variants, among them what ``tuner search`` ships (:data:`SHIPPED`),
re-run their top trials on fresh seeds inside the budget and hand back the winner of those
(``search.confirm_top``); its regret is the surrogate's best noise-free val accuracy over the
space (20,000 random recipes and every recorded one) minus the handed-back recipe's
noise-free val accuracy, in points. Seeds pair the searchers: a recipe shows the same noise
to every searcher of one seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import heapq
import json
import sys
import time
import warnings
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import replay_curves  # noqa: E402
import replay_surrogate  # noqa: E402
import results_file  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402
from replay_surrogate import EPOCHS, Surrogate  # noqa: E402

from tuner.config import SearchConfig, SpaceConfig  # noqa: E402
from tuner.progress import duration  # noqa: E402
from tuner.recipe import NEVER, TrialParams  # noqa: E402
from tuner.search import attrs  # noqa: E402
from tuner.search.pruners import ScheduleAwareASHA, make_pruner  # noqa: E402
from tuner.search.space import recipe_trials, sample  # noqa: E402

FRACTIONS = (0.1, 0.25, 0.5, 1.0)
TARGETS = (1.0, 0.5)  # regret in points: time until the handed-back recipe is this close
COST_MODELS = ("cpu", "gpu")
TRIAL_OVERHEAD = 1.0  # seconds per trial besides its epochs: build, load weights, storage
TRACES = "traces.json"  # every replayed search, beside the curves: --analyse reads it back


class RayASHA(optuna.pruners.BasePruner):
    """Ray Tune's ``ASHAScheduler`` rule (grace period 1 epoch, reduction factor 3, as
    ``bench/peers.py`` runs it): at each milestone (1, 3 epochs) a trial stops when its value is
    below the (1 - 1/3) percentile of the values its peers recorded there before it."""

    def __init__(self, epochs: int, reduction_factor: int = 3) -> None:
        self.quantile = 100 * (1 - 1 / reduction_factor)
        self.steps, trained = [], 1
        while trained < epochs:
            self.steps.append(trained - 1)
            trained *= reduction_factor

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step not in self.steps:
            return False
        recorded = [
            other.intermediate_values[step]
            for other in study.get_trials(deepcopy=False)
            if other.number != trial.number and step in other.intermediate_values
        ]
        if not recorded:
            return False
        return bool(trial.intermediate_values[step] < np.percentile(recorded, self.quantile))


def _tpe(**settings: object) -> Callable[[int], optuna.samplers.BaseSampler]:
    def build(seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(seed=seed, **settings)

    return build


PROBES = tuple(
    {"freeze_depth": 5, "unfreeze_epoch": NEVER, "head_lr": lr} for lr in (3e-4, 1e-3, 3e-3, 1e-2)
)
"""Feature-extraction probes: a tenth of a full trial's cost each, they tell TPE where the
head's rate lies before it spends full trials."""
TUNER_TPE = {"multivariate": True, "group": True, "constant_liar": True, "n_startup_trials": 8}
"""``tuner.search.study.make_sampler``'s TPE settings."""


@dataclass(frozen=True)
class Searcher:
    """One searcher of the replay: how it samples, how it prunes, whether classics go first,
    and which partial recipes it enqueues after them (the rest of each is sampled)."""

    name: str
    sampler: Callable[[int], optuna.samplers.BaseSampler]
    pruner: Callable[[], optuna.pruners.BasePruner]
    classic_first: bool
    words: str
    probes: tuple[dict, ...] = ()
    warm_start: bool = False  # the task's earlier study's best recipes right after the classics
    confirm: int = 0  # the top trials re-run CONFIRM_SEEDS times at the end, as `tuner confirm`
    confirm_rule: str = "fresh"  # which runs judge the candidates and what is handed back


def _tuner_pruner(name: str) -> Callable[[], optuna.pruners.BasePruner]:
    return lambda: make_pruner(SearchConfig(pruner=name), EPOCHS)


SEARCHERS = {
    s.name: s
    for s in (
        Searcher("tuner", _tpe(**TUNER_TPE), _tuner_pruner("asha"), True,
                 "tuner's search without its confirm (the default until 2026-12-06): TPE "
                 "(multivariate, group, constant liar, 8 start-up), schedule-aware ASHA, classic "
                 "recipes first"),
        Searcher("tuner-hyperband", _tpe(**TUNER_TPE), _tuner_pruner("hyperband"), True,
                 "tuner with search.pruner=hyperband (behind the wait-for-the-unfreeze wrapper)"),
        Searcher("ray-asha", _tpe(), lambda: RayASHA(EPOCHS), False,
                 "Ray Tune's ASHA rule over default TPE (OptunaSearch), as bench/peers.py"),
        Searcher("optuna-median", _tpe(), optuna.pruners.MedianPruner, False,
                 "a plain Optuna loop: default TPE, MedianPruner"),
        Searcher("random", lambda seed: optuna.samplers.RandomSampler(seed=seed),
                 optuna.pruners.NopPruner, False, "random search, every trial to the end"),
        Searcher("tuner-no-classic", _tpe(**TUNER_TPE), _tuner_pruner("asha"), False,
                 "tuner without the classic recipes first"),
        Searcher("tuner-startup-4", _tpe(**{**TUNER_TPE, "n_startup_trials": 4}),
                 _tuner_pruner("asha"), True, "tuner with 4 random start-up trials"),
        Searcher("tuner-startup-16", _tpe(**{**TUNER_TPE, "n_startup_trials": 16}),
                 _tuner_pruner("asha"), True, "tuner with 16 random start-up trials"),
        Searcher("tuner-univariate", _tpe(constant_liar=True, n_startup_trials=8),
                 _tuner_pruner("asha"), True, "tuner with independent (univariate) TPE"),
        Searcher("tuner-plain-asha", _tpe(**TUNER_TPE),
                 lambda: ScheduleAwareASHA(EPOCHS, schedule_aware=False), True,
                 "tuner's ASHA with every trial everyone's peer"),
        Searcher("tuner-rf2", _tpe(**TUNER_TPE),
                 lambda: ScheduleAwareASHA(EPOCHS, reduction_factor=2), True,
                 "tuner's ASHA keeping the top half at each rung (rungs after 1, 2 epochs)"),
        Searcher("tuner-no-pruning", _tpe(**TUNER_TPE), optuna.pruners.NopPruner, True,
                 "tuner's sampler, every trial to the end"),
        Searcher("tuner-probes", _tpe(**TUNER_TPE), _tuner_pruner("asha"), True,
                 "tuner plus 4 cheap probes first: feature extraction (cached features) at head "
                 "rates 3e-4, 1e-3, 3e-3, 1e-2", PROBES),
        Searcher("tuner-no-liar", _tpe(**{**TUNER_TPE, "constant_liar": False}),
                 _tuner_pruner("asha"), True, "tuner without constant liar"),
        Searcher("tuner-warm-start", _tpe(**TUNER_TPE), _tuner_pruner("asha"), True,
                 "tuner warm-started (--warm-start) from the 3 best random recipes of the other "
                 "upstream build's recording: a study of a closely related task", warm_start=True),
        Searcher("tuner-confirm-3", _tpe(**TUNER_TPE), _tuner_pruner("asha"), True,
                 "tuner, then its top 3 trials re-run on 2 fresh seeds each inside the budget "
                 "(`search.confirm_top: 3`), the best mean over fresh seeds handed back",
                 confirm=3),
        Searcher("tuner-confirm-3-pooled", _tpe(**TUNER_TPE), _tuner_pruner("asha"), True,
                 "tuner-confirm-3 judging by the mean curve of all 3 runs (the original too), "
                 "handed back at that mean curve's best epoch", confirm=3, confirm_rule="pooled"),
        Searcher("tuner-confirm-3-epoch-run", _tpe(**TUNER_TPE), _tuner_pruner("asha"), True,
                 "tuner-confirm-3 (winner by fresh seeds) handing back the winner's run whose "
                 "own best epoch is nearest the best epoch of the winner's mean curve",
                 confirm=3, confirm_rule="epoch-run"),
        Searcher("tuner-first-rung-2", _tpe(**TUNER_TPE),
                 lambda: ScheduleAwareASHA(EPOCHS, first_rung=2), True,
                 "tuner's ASHA with its one rung after 2 epochs, not 1 and 3"),
    )
}  # fmt: skip
SHIPPED = "tuner-confirm-3-epoch-run"
"""What `tuner search` does by default now: the search, then its confirm (``search.confirm_top:
3``, ``confirm_seeds: 2``, the run nearest the mean curve's best epoch handed back). The tables
compare every searcher against it unless ``--against`` names another."""
TOP_THIRD = "one-epoch-top-third"
"""Rounds of 9 random recipes trained one epoch; the best 3 of each round go on to the end."""


@dataclass
class Trace:
    """One replayed search: (time, regret, test) each time the handed-back recipe changed."""

    searcher: str
    cost: str
    workers: int
    seed: int
    budget: float  # simulated seconds of wall time
    changes: list[tuple[float, float, float]]
    trials: int

    def at(self, seconds: float) -> tuple[float, float]:
        """(regret, test) of the recipe handed back at ``seconds``; inf, nan before any."""
        found = [(r, t) for when, r, t in self.changes if when <= seconds]
        return found[-1] if found else (float("inf"), float("nan"))

    def time_to(self, regret: float) -> float:
        """Seconds until the handed-back recipe's regret is at most ``regret``; inf: never."""
        return next((w for w, r, _ in self.changes if r <= regret + 1e-9), float("inf"))


class Task:
    """The surrogate plus what the replay asks of it per recipe, cached by recipe."""

    def __init__(self, surrogate: Surrogate, space: SpaceConfig, reference: float,
                 warm: tuple[dict, ...] = ()) -> None:  # fmt: skip
        self.surrogate, self.space, self.reference = surrogate, space, reference
        self.warm = warm  # an earlier study's best recipes (Optuna params), for warm starts
        self._mean: dict[TrialParams, np.ndarray] = {}
        self._cost: dict[tuple[TrialParams, str], np.ndarray] = {}

    def mean(self, params: TrialParams) -> np.ndarray:
        if params not in self._mean:
            self._mean[params] = self.surrogate.mean(params)
        return self._mean[params]

    def cost(self, params: TrialParams, model: str) -> np.ndarray:
        if (params, model) not in self._cost:
            self._cost[params, model] = self.surrogate.epoch_seconds(params, model)
        return self._cost[params, model]

    def observed(self, params: TrialParams, seed: int, run: int = 0) -> np.ndarray:
        """The same recipe shows the same noise to every searcher of one seed; ``run`` > 0: a
        re-run of it on a fresh training seed (another draw)."""
        key = [seed, zlib.crc32(repr(params).encode()), *([run] if run else [])]
        rng = np.random.default_rng(key)
        rows = self.surrogate.noise_rows(params)
        noise = rows[rng.integers(len(rows))]
        return np.clip(self.mean(params) + noise, 0.0, 1.0)

    def handed_back(self, params: TrialParams, observed: np.ndarray) -> tuple[float, float]:
        """(regret in points, test) of a complete trial, at the epoch it looked best."""
        mean = self.mean(params)
        best_epoch = int(np.argmax(observed[:EPOCHS]))
        return 100 * (self.reference - mean[best_epoch]), float(mean[EPOCHS])

    def full_trial_seconds(self, model: str) -> float:
        full = TrialParams(0, None, "all", 1e-3, 1e-4, "adam", 64, 1e-5)
        return float(self.cost(full, model).sum()) + self.surrogate.trial_overhead


def replay(searcher: Searcher, task: Task, cost: str, seed: int, compute: float,
           workers: int) -> Trace:  # fmt: skip
    """One asynchronous search of ``compute`` simulated seconds of work on ``workers``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=searcher.sampler(seed), pruner=searcher.pruner()
    )
    if searcher.classic_first:
        for _, params in recipe_trials(task.space, EPOCHS)[0]:
            study.enqueue_trial(params)
    for params in (*(task.warm if searcher.warm_start else ()), *searcher.probes):
        study.enqueue_trial(params)
    budget = compute / workers
    trace = Trace(searcher.name, cost, workers, seed, budget, [], 0)
    reserve = searcher.confirm * CONFIRM_SEEDS * task.full_trial_seconds(cost) / workers
    search_budget = budget - reserve
    events: list[tuple[float, int, int, int]] = []  # (time, tiebreak, worker, epoch)
    running: dict[int, tuple[optuna.Trial, TrialParams, np.ndarray, np.ndarray]] = {}
    best, order = -1.0, 0

    def start(worker: int, now: float) -> None:
        nonlocal order
        trial = study.ask()
        params = sample(trial, task.space, EPOCHS)
        trial.set_user_attr(attrs.PARAMS, dataclasses.asdict(params))
        seconds = task.cost(params, cost)
        running[worker] = (trial, params, task.observed(params, seed), seconds)
        order += 1
        ends = now + task.surrogate.trial_overhead + seconds[0]
        heapq.heappush(events, (ends, order, worker, 0))

    for worker in range(workers):
        start(worker, 0.0)
    complete: list[tuple[float, TrialParams, np.ndarray]] = []
    while events:
        now, _, worker, epoch = heapq.heappop(events)
        if now > search_budget:
            break
        trial, params, observed, seconds = running[worker]
        trial.report(float(observed[epoch]), epoch)
        if epoch == EPOCHS - 1:
            value = float(observed[:EPOCHS].max())
            study.tell(trial, value)
            trace.trials += 1
            complete.append((value, params, observed))
            if value > best:
                best = value
                trace.changes.append((now, *task.handed_back(params, observed)))
        elif trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
            trace.trials += 1
        else:
            order += 1
            heapq.heappush(events, (now + seconds[epoch + 1], order, worker, epoch + 1))
            continue
        start(worker, now)
    if searcher.confirm and complete:
        _confirm(task, cost, seed, trace, complete, searcher, workers, search_budget)
    return trace


CONFIRM_SEEDS = 2
"""Fresh seeds each confirmed trial is re-run on."""


def _confirm(task: Task, cost: str, seed: int, trace: Trace,
             complete: list[tuple[float, TrialParams, np.ndarray]], searcher: Searcher,
             workers: int, starts: float) -> None:  # fmt: skip
    """What `tuner search` does when its budget is spent (``search.confirm_top``): re-run the
    top complete trials on CONFIRM_SEEDS fresh seeds from ``starts`` on, spread over the
    workers. Rule ``fresh`` (tuner's): the winner is the recipe with the best mean over its
    fresh runs (the original run left out: it is the lucky draw that ranked it), and the model
    handed back is the winner's best run (original or fresh) at its best epoch, as `tuner
    export-best` ships; ``pooled``: judged and handed back by the mean curve of all runs;
    ``epoch-run``: judged as ``fresh``, handing back the winner's run nearest the best epoch of
    its mean curve (:func:`_nearest_epoch_run`)."""
    free = [starts] * workers
    winner, best, ends = None, -1.0, starts
    for _, params, observed in sorted(complete, key=lambda c: -c[0])[: searcher.confirm]:
        fresh = []
        for again in range(1, CONFIRM_SEEDS + 1):
            seconds = float(task.cost(params, cost).sum()) + task.surrogate.trial_overhead
            ends = max(ends, _give_to_first_free(free, seconds))
            fresh.append(task.observed(params, seed, again))
        runs = [observed, *fresh]
        if searcher.confirm_rule == "pooled":
            score = float(np.mean(runs, axis=0)[:EPOCHS].max())
        else:
            score = float(np.mean([run[:EPOCHS].max() for run in fresh]))
        if score > best:
            if searcher.confirm_rule == "fresh":
                shipped = max(runs, key=lambda run: run[:EPOCHS].max())
            elif searcher.confirm_rule == "epoch-run":
                shipped = _nearest_epoch_run(runs)
            else:
                shipped = np.mean(runs, axis=0)
            winner, best = (params, shipped), score
    if winner is not None and ends <= trace.budget:
        trace.changes.append((ends, *task.handed_back(*winner)))


def _nearest_epoch_run(runs: list[np.ndarray]) -> np.ndarray:
    """The run whose own best epoch is nearest the best epoch of the runs' mean curve (the
    higher value among equals): the checkpoint a search that keeps each run's best epoch can
    ship for "the epoch that is best on average"."""
    target = int(np.argmax(np.mean(runs, axis=0)[:EPOCHS]))
    return min(runs, key=lambda r: (abs(int(np.argmax(r[:EPOCHS])) - target), -r[:EPOCHS].max()))


def replay_top_third(task: Task, cost: str, seed: int, compute: float, workers: int) -> Trace:
    """Rounds of 9 random recipes one epoch each, then the best 3 to the end; each phase's jobs
    go to the first free worker, and a round's continuations wait for its last first epoch."""
    sampler = optuna.samplers.RandomSampler(seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    budget = compute / workers
    trace = Trace(TOP_THIRD, cost, workers, seed, budget, [], 0)
    free: list[float] = [0.0] * workers
    finished: list[tuple[float, float, TrialParams, np.ndarray]] = []  # (ends, value, ...)
    while min(free) < budget:
        round_ = []
        for _ in range(9):
            trial = study.ask()
            params = sample(trial, task.space, EPOCHS)
            study.tell(trial, 0.0)
            seconds, observed = task.cost(params, cost), task.observed(params, seed)
            at = _give_to_first_free(free, task.surrogate.trial_overhead + seconds[0])
            round_.append((observed[0], params, observed, seconds, at))
            trace.trials += int(at <= budget)
        barrier = max(at for *_, at in round_)
        free = [max(f, barrier) for f in free]
        for _, params, observed, seconds, _ in sorted(round_, key=lambda r: -r[0])[:3]:
            ends = _give_to_first_free(free, float(seconds[1:].sum()))
            if ends <= budget:
                finished.append((ends, float(observed[:EPOCHS].max()), params, observed))
    best = -1.0
    for ends, value, params, observed in sorted(finished, key=lambda f: f[0]):
        if value > best:
            best = value
            trace.changes.append((ends, *task.handed_back(params, observed)))
    return trace


def _give_to_first_free(free: list[float], seconds: float) -> float:
    """Give the job to the first free worker; when it ends."""
    worker = int(np.argmin(free))
    free[worker] += float(seconds)
    return free[worker]


def reference(surrogate: Surrogate, space: SpaceConfig, curves: list[dict]) -> float:
    """The best noise-free val accuracy of the space: 20,000 random recipes and the recorded."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=12345))
    recipes = [replay_surrogate.params_of(c["recipe"]) for c in curves]
    for _ in range(20000):
        recipes.append(sample(study.ask(), space, EPOCHS))
    x = np.stack([replay_surrogate.features(p) for p in recipes])
    return float(surrogate.curve_model.predict(x)[:, :EPOCHS].max())


def summarise(traces: list[Trace], searchers: list[str], cost: str, workers: int) -> str:
    """Median [IQR] regret at each budget fraction, test, and time to the targets."""
    lines = [
        "| searcher | trials | " + " | ".join(f"regret at {f:.0%}" for f in FRACTIONS)
        + " | test at 100% | " + " | ".join(f"time to {t:g} pt" for t in TARGETS) + " |",
        "| --- " * (3 + len(FRACTIONS) + len(TARGETS)) + "|",
    ]  # fmt: skip
    for name in searchers:
        mine = [t for t in traces if (t.searcher, t.cost, t.workers) == (name, cost, workers)]
        if not mine:
            continue
        cells = [_iqr([t.at(f * t.budget)[0] for t in mine]) for f in FRACTIONS]
        tests = [t.at(t.budget)[1] for t in mine]
        times = [_reached([t.time_to(target) / t.budget for t in mine]) for target in TARGETS]
        lines.append(
            f"| {name} | {np.median([t.trials for t in mine]):.0f} | " + " | ".join(cells)
            + f" | {np.nanmedian(tests):.4f} | " + " | ".join(times) + " |"
        )  # fmt: skip
    return "\n".join(lines)


def paired(traces: list[Trace], searchers: list[str], cost: str, workers: int,
           against: str = SHIPPED) -> str:  # fmt: skip
    """``against`` minus each searcher, seed by seed (the same noise draws), at each fraction:
    median regret difference (negative: ``against`` closer to the best), its wins and losses,
    and the two-sided Wilcoxon signed-rank p over the seeds."""
    from scipy.stats import wilcoxon

    def regrets(name: str, fraction: float) -> dict[int, float]:
        return {t.seed: t.at(fraction * t.budget)[0] for t in traces
                if (t.searcher, t.cost, t.workers) == (name, cost, workers)}  # fmt: skip

    lines = [
        f"| {against} minus | " + " | ".join(f"at {f:.0%}" for f in FRACTIONS) + " |",
        "| --- " * (1 + len(FRACTIONS)) + "|",
    ]
    for name in searchers:
        if name == against or not regrets(name, 1.0):
            continue
        cells = []
        for fraction in FRACTIONS:
            mine, theirs = regrets(against, fraction), regrets(name, fraction)
            seeds = sorted(set(mine) & set(theirs))
            d = np.array([mine[s] - theirs[s] for s in seeds])
            d = np.where(np.isfinite(d), d, np.sign(d) * 100)  # one found nothing yet
            wins, losses = int((d < 0).sum()), int((d > 0).sum())
            p = wilcoxon(d).pvalue if wins + losses else 1.0
            cells.append(f"{np.median(d):+.2f} ({wins}-{losses}, p={p:.2g})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def half_time(traces: list[Trace], searchers: list[str], cost: str, workers: int,
              against: str = SHIPPED) -> str:  # fmt: skip
    """The race's goal in the replay: for each peer, the median time ``against`` takes to reach
    the peer's final median regret, over the peer's own median time to reach it (at most 0.5
    meets the goal). Times are shares of the budget; never reached counts as infinite."""
    lines = [f"| peer | its final median regret | its time to it | {against}'s time | ratio |",
             "| --- | --- | --- | --- | --- |"]  # fmt: skip

    def mine(name: str) -> list[Trace]:
        return [t for t in traces if (t.searcher, t.cost, t.workers) == (name, cost, workers)]

    for name in searchers:
        if name == against or not mine(name):
            continue
        target = float(np.median([t.at(t.budget)[0] for t in mine(name)]))
        theirs = float(np.median([t.time_to(target) / t.budget for t in mine(name)]))
        ours = float(np.median([t.time_to(target) / t.budget for t in mine(against)]))
        ratio = ours / theirs if np.isfinite(ours) and theirs > 0 else float("inf")
        reached = "never" if not np.isfinite(ours) else f"{ours:.0%}"
        lines.append(f"| {name} | {target:.2f} | {theirs:.0%} | {reached} | {ratio:.2f} |")
    return "\n".join(lines)


def _iqr(values: list[float]) -> str:
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return "none" if not np.isfinite(median) else f"{median:.2f} [{q1:.2f}, {q3:.2f}]"


def _reached(fractions: list[float]) -> str:
    """Median fraction of the budget to reach a target, and how many seeds reached it."""
    reached = sum(np.isfinite(f) for f in fractions)
    median = np.median(fractions)
    text = "never" if not np.isfinite(median) else f"{median:.0%}"
    return f"{text} ({reached}/{len(fractions)})"


PARALLEL = ("tuner", "tuner-no-liar", "tuner-hyperband", "tuner-confirm-3",
            "tuner-confirm-3-pooled", "tuner-confirm-3-epoch-run", "ray-asha", "optuna-median",
            "random", TOP_THIRD)  # fmt: skip
"""The searchers replayed with several workers too (each replay costs seconds; all would be
hours)."""


@dataclass(frozen=True)
class Job:
    """One replay to run: which searcher, cost model, workers, seed and compute."""

    searcher: str
    cost: str
    workers: int
    seed: int
    compute: float


_TASK: list[Task] = []  # each pool process's copy of the task, set by its initializer


def _set_task(task: Task) -> None:
    _TASK[:] = [task]


def _replay_job(job: Job) -> Trace:
    task = _TASK[0]
    if job.searcher == TOP_THIRD:
        return replay_top_third(task, job.cost, job.seed, job.compute, job.workers)
    searcher = SEARCHERS[job.searcher]
    return replay(searcher, task, job.cost, job.seed, job.compute, job.workers)


def run_all(task: Task, names: list[str], seeds: int, budget: float, workers: list[int],
            jobs: int, first_seed: int = 0) -> list[Trace]:  # fmt: skip
    """Every replay, on ``jobs`` processes, with a progress line per tenth."""
    plan = [
        Job(name, cost, count, seed, budget * task.full_trial_seconds(cost))
        for cost in COST_MODELS for count in workers for name in names
        for seed in range(first_seed, first_seed + seeds)
        if count == 1 or name in PARALLEL
    ]  # fmt: skip
    traces, started = [], time.monotonic()
    with ProcessPoolExecutor(jobs, initializer=_set_task, initargs=(task,)) as pool:
        for done, trace in enumerate(pool.map(_replay_job, plan, chunksize=2), 1):
            traces.append(trace)
            if done % max(1, len(plan) // 10) == 0 or done == len(plan):
                rate = (time.monotonic() - started) / done
                print(f"replay: {done}/{len(plan)} replays, {rate:.1f} s each, ETA "
                      f"{duration(rate * (len(plan) - done))}", flush=True)  # fmt: skip
    return traces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seeds from here on (fresh ones confirm what others chose)",
    )
    parser.add_argument(
        "--traces", default=TRACES,
        help=f"file kept beside the curves ({TRACES}); --analyse takes several, comma-separated",
    )  # fmt: skip
    parser.add_argument(
        "--replicates",
        type=Path,
        help="the recording whose replicates give the noise (default: --curves)",
    )
    parser.add_argument("--budget", type=float, default=40.0, help="in full trials' compute")
    parser.add_argument("--workers", default="1,4,8")
    parser.add_argument("--searchers", default=",".join([*SEARCHERS, TOP_THIRD]))
    parser.add_argument("--curves", type=Path, help="a recording (default: the largest)")
    parser.add_argument("--jobs", type=int, default=2, help="processes that replay")
    parser.add_argument("--plot", type=Path, help="draw median regret over the budget here")
    parser.add_argument("--out", type=Path, help="append the tables to this markdown file")
    parser.add_argument(
        "--analyse", action="store_true", help="tables and plot of the kept traces, no replay"
    )
    parser.add_argument(
        "--against", default=SHIPPED, help=f"the searcher the others are paired with ({SHIPPED})"
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    started = time.monotonic()
    args.curves = args.curves or replay_curves.largest_recording()
    curves = replay_curves.load_curves(args.curves)
    compared = replay_surrogate.compare_models(curves)
    replicates = replay_curves.load_replicates(args.replicates or args.curves)
    surrogate = replay_surrogate.fit(curves, compared[0].name, TRIAL_OVERHEAD, replicates)
    space = replay_curves.task_config().space
    earlier = replay_curves.other_recording(args.curves)
    warm = replay_curves.best_recipes(earlier, 3) if earlier else ()
    task = Task(surrogate, space, reference(surrogate, space, curves), warm)
    names, workers = args.searchers.split(","), [int(w) for w in args.workers.split(",")]
    if not warm:
        names = [n for n in names if not (n in SEARCHERS and SEARCHERS[n].warm_start)]
    kept = args.curves / args.traces
    if args.analyse:
        traces = load_traces([args.curves / name for name in args.traces.split(",")])
        traces = [t for t in traces if t.searcher in names and t.workers in workers]
    else:
        traces = run_all(task, names, args.seeds, args.budget, workers, args.jobs, args.first_seed)
        kept.write_text(json.dumps([dataclasses.asdict(t) for t in traces]))
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = [
        f"## Replay ({when})", "",
        f"Command: `python bench/replay.py --seeds {args.seeds} --first-seed {args.first_seed} "
        f"--budget {args.budget:g} --searchers {args.searchers} "
        + (f"--replicates {_shown(args.replicates)} " if args.replicates else "")
        + f"--workers {args.workers} --curves {_shown(args.curves)}`; "
        f"{len(curves)} recorded recipes; "
        f"{(time.monotonic() - started) / 60:.0f} minutes; traces kept in {kept}.", "",
        surrogate_table(compared), "",
        f"Best noise-free val accuracy of the space: {task.reference:.4f}. A full fine-tuning "
        f"trial costs {task.full_trial_seconds('cpu'):.1f} s under the cpu model and "
        f"{task.full_trial_seconds('gpu'):.1f} s under the gpu model; {surrogate.quiet_share:.0%}"
        f" of the recorded epochs were quiet enough to fit the cpu model on. Noise: "
        f"{surrogate.noise_source}, {100 * np.abs(surrogate.noise[:, EPOCHS - 1]).mean():.2f} "
        f"points mean absolute at the last epoch.", "",
    ]  # fmt: skip
    for cost in COST_MODELS:
        for count in workers:
            text += [f"### Cost model `{cost}`, {count} worker(s)", "",
                     summarise(traces, names, cost, count), "",
                     f"Paired by seed: median regret difference (wins-losses of {args.against}, "
                     "Wilcoxon signed-rank p):", "",
                     paired(traces, names, cost, count, args.against), "",
                     f"Half-time goal ({args.against}'s time to each peer's final median regret "
                     "over the peer's own, as shares of the budget; met at 0.5 or less):", "",
                     half_time(traces, names, cost, count, args.against), ""]  # fmt: skip
    print("\n".join(text))
    results_file.append_run(args.out, "\n".join(text))
    if args.plot:
        plot(traces, names, 1, args.plot, args.against)


def load_traces(files: list[Path]) -> list[Trace]:
    """The traces of several kept files as one set. A replay that two files both hold (same
    searcher, cost model, workers and seed: e.g. replayed again on another CPU, where floating
    point makes it differ) is taken from the first file named, so no seed counts twice."""
    kept: dict[tuple, Trace] = {}
    for path in files:
        for item in json.loads(path.read_text()):
            trace = Trace(**item)
            kept.setdefault((trace.searcher, trace.cost, trace.workers, trace.seed), trace)
    return list(kept.values())


def _shown(path: Path) -> str:
    """``path`` relative to the repository where it is inside it (as a command would name it)."""
    full = path.resolve()
    return str(full.relative_to(REPO)) if full.is_relative_to(REPO) else str(path)


def plot(traces: list[Trace], names: list[str], workers: int, path: Path, bold: str) -> None:
    """Median regret against the budget spent, one panel per cost model, one line a searcher."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fractions = np.linspace(0.02, 1.0, 50)
    figure, axes = plt.subplots(1, len(COST_MODELS), figsize=(12, 4.5), sharey=True)
    for axis, cost in zip(axes, COST_MODELS, strict=True):
        for name in names:
            mine = [t for t in traces if (t.searcher, t.cost, t.workers) == (name, cost, workers)]
            if not mine:
                continue
            medians = [np.median([t.at(f * t.budget)[0] for t in mine]) for f in fractions]
            label = f"{name} (what tuner search ships)" if name == SHIPPED else name
            style = {"linewidth": 2.5, "color": "black"} if name == bold else {"linewidth": 1}
            axis.plot(fractions, medians, label=label, **style)
        axis.set(title=f"cost model {cost}, {workers} worker(s)", xlabel="share of the budget",
                 ylabel="median regret (val points)")  # fmt: skip
        axis.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def surrogate_table(compared: list[replay_surrogate.HeldOut]) -> str:
    lines = [
        "| curve model | held-out MAE, val epoch 1..4 (points) | test (points) | "
        "rank correlation of best val |",
        "| --- | --- | --- | --- |",
    ]
    for h in compared:
        epochs = ", ".join(f"{m:.2f}" for m in h.mae[:EPOCHS])
        lines.append(f"| {h.name} | {epochs} | {h.mae[EPOCHS]:.2f} | {h.rank:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
