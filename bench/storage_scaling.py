"""Storage scaling benchmark (issue 3): cheap trials against PostgreSQL and SQLite.

Run from the repository root:

    python bench/storage_scaling.py [--trials N] [--out bench/RESULTS.md]

Every configuration (storage x sampler x workers) gets a fresh study that is deleted
afterwards. The workers are separate processes ("spawn"), each opening the storage itself
with ``tuner.search.storage.open_storage`` and joining the study with the product's sampler
and pruner. A trial writes to the storage what a tuner trial wrote when this bench was made
(sample the real search space, record params/worker/origin, then per epoch: curves, report,
should_prune), with the training replaced by nothing, so a trial's wall time is the storage +
sampler + Optuna cost. Workers share one budget of finished trials.

This is a benchmark, not a test: nothing is asserted. It appends the run's command, machine
and tables to RESULTS.md; what they mean is written there by hand, in "Storage scaling".
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime
import json
import math
import multiprocessing as mp
import os
import platform
import queue
import random
import shlex
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import optuna  # noqa: E402
import results_file  # noqa: E402

from tuner import config as config_mod  # noqa: E402
from tuner.search import attrs  # noqa: E402
from tuner.search import study as study_mod  # noqa: E402
from tuner.search.pruners import make_pruner  # noqa: E402
from tuner.search.space import sample  # noqa: E402
from tuner.search.storage import open_storage  # noqa: E402

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SECTION = "Storage scaling (issue 3)"  # the section of RESULTS.md that explains the tables
SETUP_TIMEOUT = 300.0
RUN_TIMEOUT = 900.0

# Every RDBStorage method that talks to the database (the private ones are what Optuna's
# _CachedStorage calls). Time spent inside them is the "storage" share of a trial.
DB_METHODS = (
    "_create_new_trial",
    "_get_best_trial_id",
    "_get_stale_trial_ids",
    "_get_trials",
    "_set_trial_param",
    "create_new_study",
    "create_new_trial",
    "delete_study",
    "get_all_studies",
    "get_all_trials",
    "get_best_trial",
    "get_study_directions",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_system_attrs",
    "get_study_user_attrs",
    "get_trial",
    "get_trial_id_from_study_id_trial_number",
    "set_study_system_attr",
    "set_study_user_attr",
    "set_trial_intermediate_value",
    "set_trial_param",
    "set_trial_state_values",
    "set_trial_system_attr",
    "set_trial_user_attr",
)
SAMPLER_METHODS = (
    "infer_relative_search_space",
    "sample_relative",
    "sample_independent",
    "before_trial",
    "after_trial",
)
CATEGORIES = ("storage", "sampler", "pruner", "other")


# --- inside a worker ----------------------------------------------------------------------


class Clock:
    """Exclusive wall time per category on the main thread (storage inside sampler is storage).

    Also counts, on the main thread only: storage calls (outermost ones, with their count and
    time per method), SQL statements, and connection checkouts (each a ``pool_pre_ping``
    round trip on PostgreSQL). Heartbeats, from Optuna's heartbeat thread, are counted apart.
    """

    def __init__(self) -> None:
        self.main = threading.get_ident()
        self.totals = dict.fromkeys(CATEGORIES, 0.0)
        self.counts = {"calls": 0, "statements": 0, "checkouts": 0}
        self.by_method: collections.Counter[str] = collections.Counter()
        self.method_time: collections.Counter[str] = collections.Counter()
        self.heartbeats = 0
        self._stack = ["other"]
        self._mark = time.perf_counter()
        self._call: tuple[str, float] = ("?", 0.0)

    def on_main(self) -> bool:
        return threading.get_ident() == self.main

    def enter(self, category: str, method: str | None = None) -> None:
        now = time.perf_counter()
        self.totals[self._stack[-1]] += now - self._mark
        self._mark = now
        if category == "storage" and self._stack[-1] != "storage":
            self.counts["calls"] += 1
            self.by_method[method or "?"] += 1
            self._call = (method or "?", now)
        self._stack.append(category)

    def leave(self) -> None:
        now = time.perf_counter()
        category = self._stack.pop()
        self.totals[category] += now - self._mark
        self._mark = now
        if category == "storage" and self._stack[-1] != "storage":
            self.method_time[self._call[0]] += now - self._call[1]

    def snapshot(self) -> dict[str, float]:
        """Totals so far (seconds, counts), with the running category brought up to now."""
        self.enter(self._stack[-1])
        self.leave()
        return {**self.totals, **self.counts}

    def timed(self, category: str, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if not self.on_main():
                return method(*args, **kwargs)
            self.enter(category, name)
            try:
                return method(*args, **kwargs)
            finally:
                self.leave()

        return call


def instrument(storage: Any, sampler: Any, pruner: Any, clock: Clock) -> None:
    """Wrap the instances' methods (not the classes) so that the clock sees every call."""
    import sqlalchemy

    for name in DB_METHODS:
        if hasattr(storage, name):
            setattr(storage, name, clock.timed("storage", name, getattr(storage, name)))
    beat = storage.record_heartbeat

    def record_heartbeat(trial_id: int) -> None:
        clock.heartbeats += 1
        beat(trial_id)

    storage.record_heartbeat = record_heartbeat
    for name in SAMPLER_METHODS:
        setattr(sampler, name, clock.timed("sampler", name, getattr(sampler, name)))
    pruner.prune = clock.timed("pruner", "prune", pruner.prune)

    def count(key: str) -> Callable[..., None]:
        def listener(*_: Any) -> None:
            if clock.on_main():
                clock.counts[key] += 1

        return listener

    sqlalchemy.event.listen(storage.engine, "before_cursor_execute", count("statements"))
    sqlalchemy.event.listen(storage.engine, "checkout", count("checkouts"))


def synthetic_curve(params: Any, number: int, epochs: int) -> list[float]:
    """A plausible validation-accuracy curve, so that TPE and the pruner have signal."""
    rng = random.Random(number)
    quality = math.exp(-((math.log10(params.head_lr) + 3.0) ** 2))
    quality *= 0.9 if params.optimizer == "sgd" else 1.0
    return [
        min(1.0, 0.1 + 0.85 * quality * (1 - 0.5 ** (epoch + 1)) + rng.gauss(0, 0.02))
        for epoch in range(epochs)
    ]


@dataclasses.dataclass(frozen=True)
class WorkerJob:
    """What one worker process is told."""

    index: int
    url: str
    study: str
    overrides: tuple[str, ...]
    epoch_sleep: float


def worker_main(job: WorkerJob, barrier: Any, results: Any) -> None:
    """Process entry point: set up, wait for the start signal, run trials, send the records."""
    try:
        results.put(run_worker(job, barrier))
    except BaseException as exc:  # report it; never leave the parent waiting
        barrier.abort()
        results.put({"index": job.index, "error": f"{type(exc).__name__}: {exc}"})


def run_worker(job: WorkerJob, barrier: Any) -> dict[str, Any]:
    """Join the study like ``tuner worker`` and run cheap trials until the budget is met."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = config_mod.load_config(None, list(job.overrides))
    epochs = config.train.epochs
    worker_name = f"bench/{job.index}"
    storage = open_storage(job.url)
    study_mod.watch_trials(storage, config.search)  # heartbeats on, as load_pinned does
    sampler = study_mod.make_sampler(config.search, job.study, worker_name)
    pruner = make_pruner(config.search, epochs)
    clock = Clock()
    instrument(storage, sampler, pruner, clock)
    study = optuna.load_study(study_name=job.study, storage=storage, sampler=sampler, pruner=pruner)
    worker_attr = {"host": platform.node(), "worker": worker_name, "pid": os.getpid()}

    def objective(trial: optuna.Trial) -> float:
        params = sample(trial, config.space, epochs)
        trial.set_user_attr(attrs.ORIGIN, trial.number)
        trial.set_user_attr(attrs.PARAMS, dataclasses.asdict(params))
        trial.set_user_attr(attrs.WORKER, worker_attr)
        curve = synthetic_curve(params, trial.number, epochs)
        for epoch, accuracy in enumerate(curve):
            if job.epoch_sleep:
                time.sleep(job.epoch_sleep)
            done = curve[: epoch + 1]
            # the four per-epoch curves of tuner.run.objective._record_curves
            trial.set_user_attr(attrs.VAL_ACCURACY, done)
            trial.set_user_attr(attrs.TRAIN_LOSS, [1.0 - a for a in done])
            trial.set_user_attr(attrs.EPOCH_SECONDS, [job.epoch_sleep] * len(done))
            trial.set_user_attr(attrs.FROZEN_DEPTH, [params.freeze_depth] * len(done))
            trial.report(accuracy, epoch)
            if trial.should_prune():
                trial.set_user_attr(attrs.STOPPED, f"pruned after epoch {epoch}")
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")
        trial.set_user_attr(attrs.BEST_EPOCH, max(range(epochs), key=curve.__getitem__))
        return max(curve)

    def stop_when_done(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if study_mod.finished_count(study) >= study_mod.stored_budget(study):
            study.stop()

    records: list[dict[str, Any]] = []
    last: dict[str, Any] = {}

    def record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        now, cpu, snap = time.perf_counter(), time.process_time(), clock.snapshot()
        row = {key: snap[key] - last["snap"][key] for key in snap}
        row.update(number=trial.number, state=trial.state.name, wall=now - last["wall"])
        row["cpu"] = cpu - last["cpu"]
        records.append(row)
        last.update(wall=now, cpu=cpu, snap=snap)

    barrier.wait(timeout=SETUP_TIMEOUT)
    start = time.monotonic()  # system-wide on Linux: comparable between the processes
    last.update(wall=time.perf_counter(), cpu=time.process_time(), snap=clock.snapshot())
    clock.by_method.clear()
    clock.method_time.clear()
    if study_mod.finished_count(study) < study_mod.stored_budget(study):
        study.optimize(objective, callbacks=[stop_when_done, record], catch=(Exception,))
    end = time.monotonic()
    storage.engine.dispose()
    return {
        "index": job.index,
        "start": start,
        "end": end,
        "records": records,
        "heartbeats": clock.heartbeats,
        "by_method": dict(clock.by_method),
        "method_time": dict(clock.method_time),
    }


# --- the parent ---------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    """One configuration's results."""

    backend: str
    sampler: str
    workers: int
    budget: int
    error: str | None = None
    finished: int = 0
    failed: int = 0
    pruned: int = 0
    wall: float = 0.0
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    heartbeats: int = 0
    by_method: dict[str, int] = dataclasses.field(default_factory=dict)
    method_time: dict[str, float] = dataclasses.field(default_factory=dict)
    server_cpu: float | None = None
    foreign_cores: float | None = None
    peak_connections: int | None = None
    cores: int = 1

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.records)

    @property
    def per_minute(self) -> float:
        return 60.0 * self.finished / self.wall if self.wall else 0.0

    @property
    def server_ms(self) -> float | None:
        """PostgreSQL server CPU per finished trial, ms."""
        return 1000.0 * self.server_cpu / self.finished if self.server_cpu is not None else None

    @property
    def cores_busy(self) -> float:
        """Share of the machine's cores busy with workers (and the local server) in the run."""
        used = sum(r["cpu"] for r in self.records) + (self.server_cpu or 0.0)
        return used / (self.wall * self.cores) if self.wall else float("nan")

    def mean(self, key: str, records: Sequence[dict[str, Any]] | None = None) -> float:
        rows = self.records if records is None else records
        return statistics.fmean(r[key] for r in rows) if rows else float("nan")

    def ms(self, key: str, records: Sequence[dict[str, Any]] | None = None) -> float:
        """Mean per trial, in ms; ``other`` is what the categories leave of the wall time."""
        if key == "other":
            rest = sum(self.ms(k, records) for k in CATEGORIES if k != "other")
            return self.ms("wall", records) - rest
        return 1000.0 * self.mean(key, records)

    def percentile_ms(self, q: float) -> float:
        walls = sorted(r["wall"] for r in self.records)
        if not walls:
            return float("nan")
        return 1000.0 * walls[min(len(walls) - 1, math.ceil(q * len(walls)) - 1)]

    def quarter(self, which: int) -> list[dict[str, Any]]:
        """The trials of the first (0) or last (-1) quarter of the study, by trial number."""
        ordered = sorted(self.records, key=lambda r: r["number"])
        size = max(1, len(ordered) // 4)
        return ordered[:size] if which == 0 else ordered[-size:]


def postgres_processes_cpu() -> float | None:
    """CPU seconds used so far by all local postgres processes, reaped backends included.

    A backend that has exited is in the postmaster's cutime/cstime once reaped. This only
    sees a server on this machine, and counts every session on it, not only ours.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total, found = 0, False
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        if name != "postgres" and not name.startswith("postgres:"):
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
        found = True
    return total / ticks if found else None


def machine_busy() -> float | None:
    """CPU seconds all cores of this machine have spent busy since boot (/proc/stat)."""
    try:
        fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


class ConnectionWatch:
    """Peak count of server connections with one application_name, polled in a thread."""

    def __init__(self, conninfo: str, application: str) -> None:
        import psycopg

        self.peak = 0
        self._stop = threading.Event()
        self._conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=5)
        self._app = application
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            (count,) = self._conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (self._app,)
            ).fetchone()
            self.peak = max(self.peak, count)

    def close(self) -> int:
        self._stop.set()
        self._thread.join()
        self._conn.close()
        return self.peak


def libpq_conninfo(url: str) -> str:
    """The libpq connection string of a SQLAlchemy PostgreSQL URL."""
    import sqlalchemy

    parsed = sqlalchemy.make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def probe_postgres(url: str) -> tuple[dict[str, str] | None, str | None]:
    """Server facts (version, connection limits), or why PostgreSQL cannot be used."""
    try:
        import psycopg

        with psycopg.connect(libpq_conninfo(url), connect_timeout=5) as conn:
            names = ("server_version", "max_connections", "superuser_reserved_connections")
            return {n: str(conn.execute(f"SHOW {n}").fetchone()[0]) for n in names}, None
    except Exception as exc:
        text = str(exc).strip().splitlines()
        return None, f"{type(exc).__name__}: {text[0] if text else ''}"


@contextlib.contextmanager
def fresh_study(url: str, name: str, overrides: Sequence[str]) -> Iterator[None]:
    """Create the study with its config pinned (the budget lives there), delete it after."""
    storage = open_storage(url)
    config = config_mod.load_config(None, list(overrides))
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.set_user_attr(attrs.CONFIG, config_mod.to_dict(config))
    try:
        yield
    finally:
        optuna.delete_study(study_name=name, storage=storage)
        storage.engine.dispose()


def collect(procs: Sequence[Any], results: Any) -> list[dict[str, Any]]:
    """One outcome per worker; a worker that died without one becomes an error outcome."""
    outcomes: list[dict[str, Any]] = []
    deadline = time.monotonic() + RUN_TIMEOUT
    while len(outcomes) < len(procs):
        try:
            outcomes.append(results.get(timeout=2.0))
        except queue.Empty:
            dead = sum(not p.is_alive() for p in procs)
            if dead > len(outcomes) or time.monotonic() > deadline:
                with contextlib.suppress(queue.Empty):
                    outcomes.append(results.get(timeout=2.0))
                    continue
                outcomes.append({"error": "a worker died or timed out without a result"})
    return outcomes


def run_config(
    backend: str, url: str, workers: int, sampler: str, budget: int, epoch_sleep: float
) -> Row:
    """Run one configuration in a fresh study; errors end up in the row, never raised."""
    row = Row(backend, sampler, workers, budget, cores=os.cpu_count() or 1)
    name = f"bench-storage-{uuid.uuid4().hex[:12]}"
    overrides = (f"search.study={name}", f"search.sampler={sampler}", f"search.trials={budget}")
    worker_url = url
    if backend == "postgresql":  # tags our connections, to count them on the server
        worker_url += ("&" if "?" in url else "?") + f"application_name={name}"
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers + 1)
    results = ctx.Queue()
    print(f"  {backend} {sampler}, {workers} worker(s), budget {budget} ...", flush=True)
    try:
        with fresh_study(url, name, overrides):
            procs = [
                ctx.Process(
                    target=worker_main,
                    args=(WorkerJob(i, worker_url, name, overrides, epoch_sleep), barrier, results),
                )
                for i in range(workers)
            ]
            for proc in procs:
                proc.start()
            watch = None
            try:
                if backend == "postgresql":
                    watch = ConnectionWatch(libpq_conninfo(url), name)
                cpu_before = postgres_processes_cpu() if watch else None
                busy_before, window_start = machine_busy(), time.monotonic()
                barrier.wait(timeout=SETUP_TIMEOUT)
                outcomes = collect(procs, results)
            finally:
                for proc in procs:
                    proc.join(timeout=60)
                    if proc.is_alive():
                        proc.kill()
                if watch is not None:
                    time.sleep(0.5)  # let the postmaster reap the backends
                    row.peak_connections = watch.close()
            cpu_after = postgres_processes_cpu() if watch else None
            busy_after, window_end = machine_busy(), time.monotonic()
            if cpu_before is not None and cpu_after is not None:
                row.server_cpu = cpu_after - cpu_before
            errors = [o["error"] for o in outcomes if "error" in o]
            if errors:
                row.error = errors[0]
                return row
            row.wall = max(o["end"] for o in outcomes) - min(o["start"] for o in outcomes)
            row.records = [r for o in outcomes for r in o["records"]]
            row.heartbeats = sum(o["heartbeats"] for o in outcomes)
            methods: collections.Counter[str] = collections.Counter()
            seconds: collections.Counter[str] = collections.Counter()
            for outcome in outcomes:
                methods.update(outcome["by_method"])
                seconds.update(outcome["method_time"])
            row.by_method, row.method_time = dict(methods), dict(seconds)
            if busy_before is not None and busy_after is not None:
                ours = sum(r["cpu"] for r in row.records) + (row.server_cpu or 0.0)
                foreign = busy_after - busy_before - ours
                row.foreign_cores = max(0.0, foreign) / (window_end - window_start)
            states = [r["state"] for r in row.records]
            row.finished = sum(s in ("COMPLETE", "PRUNED") for s in states)
            row.pruned = states.count("PRUNED")
            row.failed = states.count("FAIL")
    except Exception as exc:
        text = str(exc).strip().splitlines()
        row.error = f"{type(exc).__name__}: {text[0] if text else ''}"
    return row


# --- the report ---------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.{digits}f}"


def results_table(rows: Sequence[Row]) -> list[str]:
    """Throughput and the split of a trial's wall time, one line per configuration."""
    columns = [
        "Storage",
        "Sampler",
        "Workers",
        "Trials (pruned)",
        "Wall s",
        "Trials/min",
        "Speed-up",
        "Cores busy",
        "Other load",
        "ms/trial mean (p50 / p95)",
        "storage ms",
        "sampler ms",
        "pruner ms",
        "other ms",
        "worker CPU ms",
        "storage calls / SQL stmts / checkouts per trial",
        "PG server CPU ms/trial",
        "peak PG connections",
    ]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    single = {(r.backend, r.sampler): r.per_minute for r in rows if r.workers == 1 and r.ok}
    for r in rows:
        if not r.ok:
            cells = [r.backend, r.sampler, str(r.workers), f"not run: {r.error or 'no trials'}"]
            lines.append("| " + " | ".join(cells + [""] * (len(columns) - 4)) + " |")
            continue
        base = single.get((r.backend, r.sampler))
        failed = f", {r.failed} failed" if r.failed else ""
        counts = f"{r.mean('calls'):.0f} / {r.mean('statements'):.0f} / {r.mean('checkouts'):.0f}"
        cells = [
            r.backend,
            r.sampler,
            str(r.workers),
            f"{r.finished} ({r.pruned}{failed})",
            f"{r.wall:.1f}",
            f"{r.per_minute:.0f}",
            f"{r.per_minute / base:.2f}x" if base else "-",
            f"{100 * r.cores_busy:.0f} %",
            f"{r.foreign_cores:.2f}" if r.foreign_cores is not None else "-",
            f"{fmt(r.ms('wall'))} ({fmt(r.percentile_ms(0.5))} / {fmt(r.percentile_ms(0.95))})",
            *(fmt(r.ms(k)) for k in CATEGORIES),
            fmt(r.ms("cpu")),
            counts,
            fmt(r.server_ms),
            str(r.peak_connections) if r.peak_connections is not None else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def growth_table(rows: Sequence[Row]) -> list[str]:
    """How a trial's cost grows with the study: first vs last quarter of its trials."""
    lines = [
        "| Storage | Sampler | Workers | ms/trial first -> last quarter "
        "| storage ms first -> last | sampler ms first -> last | SQL stmts first -> last |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if not r.ok:
            continue
        first, last = r.quarter(0), r.quarter(-1)
        cells = [
            f"{r.ms(key, first):.1f} -> {r.ms(key, last):.1f}"
            for key in ("wall", "storage", "sampler")
        ]
        cells.append(f"{r.mean('statements', first):.0f} -> {r.mean('statements', last):.0f}")
        lines.append(f"| {r.backend} | {r.sampler} | {r.workers} | " + " | ".join(cells) + " |")
    return lines


def environment(pg: dict[str, str] | None, pg_error: str | None) -> list[str]:
    import sqlalchemy

    psycopg_version = "not installed"
    with contextlib.suppress(ImportError):
        import psycopg

        psycopg_version = psycopg.__version__
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    server = (
        f"PostgreSQL {pg['server_version']} at 127.0.0.1, same machine (max_connections "
        f"{pg['max_connections']}, superuser_reserved_connections "
        f"{pg['superuser_reserved_connections']}, otherwise as packaged)"
        if pg
        else f"PostgreSQL unreachable ({pg_error}): its rows were skipped"
    )
    return [
        f"- Machine: {os.cpu_count()} CPU cores ({cpu_model()}), {memory:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}. The database server, every worker and "
        "the benchmark's parent share these cores.",
        f"- Python {platform.python_version()}, Optuna {optuna.__version__}, SQLAlchemy "
        f"{sqlalchemy.__version__}, psycopg {psycopg_version}, SQLite {sqlite3.sqlite_version}.",
        f"- {server}.",
    ]


def other_runs(others: Sequence[tuple[list[Row], dict[str, Any]]]) -> list[str]:
    """The tables of further saved runs of this benchmark, e.g. an earlier one."""
    lines: list[str] = []
    for rows, meta in others:
        load = [line for line in meta["environment"] if "load average" in line]
        series = []
        for backend in ("postgresql", "sqlite"):
            runs = [r for r in rows if r.ok and (r.backend, r.sampler) == (backend, "tpe")]
            if runs:
                steps = ", ".join(f"{r.workers}: {r.per_minute:.0f}" for r in runs)
                series.append(f"{backend} TPE trials/min by workers {steps}")
        lines += [
            f"### Run of {meta['date']}",
            "",
            f"Command: `{meta['command']}`; {'; '.join(series)}. "
            + (load[0].removeprefix("- ") if load else "Other load was not measured in it.")
            + " Columns a run did not measure show `-`.",
            "",
            *results_table(rows),
            "",
        ]
    return lines


def report(
    rows: Sequence[Row],
    meta: dict[str, Any],
    others: Sequence[tuple[list[Row], dict[str, Any]]] = (),
) -> str:
    """The run's block: how it was run, on what, and the tables; what they mean is in
    RESULTS.md's section, written by hand."""
    sleep = meta["epoch_sleep"]
    training = "nothing" if not sleep else f"a {sleep} s sleep per epoch"
    lines = [
        f"## {SECTION}: run of {meta['date']}",
        "",
        f"Command: `{meta['command']}` (run {meta['date']}, {meta['elapsed'] / 60:.1f} min in "
        f"all; training replaced by {training})."
        + (
            f" Text rebuilt from its saved results with `{meta['rendered']}`."
            if "rendered" in meta
            else ""
        ),
        "",
        *meta["environment"],
        "",
        f'The columns are explained in "{SECTION}" in bench/RESULTS.md.',
        "",
        *results_table(rows),
        "",
        "How a trial's cost grows with the study (mean over the first and the last quarter of "
        "the study's trials, by trial number):",
        "",
        *growth_table(rows),
        "",
        *other_runs(others),
    ]
    return "\n".join(lines).rstrip() + "\n"


def parse_counts(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def run_all(args: argparse.Namespace, command: str) -> tuple[list[Row], dict[str, Any]]:
    """Every configuration, PostgreSQL first; rows of an unreachable server say so."""
    began, load_before = time.monotonic(), os.getloadavg()[0]
    pg, pg_error = probe_postgres(args.pg_url)
    if pg_error:
        print(f"PostgreSQL unreachable, skipping its rows: {pg_error}", flush=True)
    plan = [("tpe", args.pg_workers, args.sqlite_workers)]
    if args.baseline_workers:
        plan.append(("random", args.baseline_workers, args.baseline_workers))
    rows: list[Row] = []
    for sampler, pg_counts, sqlite_counts in plan:
        for workers in pg_counts:
            if pg is None:
                rows.append(Row("postgresql", sampler, workers, args.trials, error="unreachable"))
                continue
            rows.append(
                run_config(
                    "postgresql", args.pg_url, workers, sampler, args.trials, args.epoch_sleep
                )
            )
        for workers in sqlite_counts:
            folder = tempfile.mkdtemp(prefix="bench-storage-")
            try:
                url = f"sqlite:///{folder}/study.db"
                rows.append(
                    run_config("sqlite", url, workers, sampler, args.trials, args.epoch_sleep)
                )
            finally:
                shutil.rmtree(folder, ignore_errors=True)
    meta = {
        "command": command,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed": time.monotonic() - began,
        "epoch_sleep": args.epoch_sleep,
        "pg": pg,
        "environment": [
            *environment(pg, pg_error),
            f"- 1-minute load average: {load_before:.2f} before the run, "
            f"{os.getloadavg()[0]:.2f} after it (other work on the machine shows here).",
        ],
    }
    return rows, meta


def load_saved(path: Path) -> tuple[list[Row], dict[str, Any]]:
    """Rows and metadata written by ``--json``."""
    saved = json.loads(path.read_text())
    return [Row(**row) for row in saved["rows"]], saved["meta"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trials", type=int, default=200, help="budget per configuration")
    parser.add_argument(
        "--out", type=Path, default=Path("bench/RESULTS.md"), help="append the run to this file"
    )
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--pg-workers", type=parse_counts, default=[1, 2, 4, 8])
    parser.add_argument("--sqlite-workers", type=parse_counts, default=[1, 2, 4])
    parser.add_argument(
        "--baseline-workers",
        type=parse_counts,
        default=[1],
        help="worker counts of the RandomSampler baseline rows (empty: none)",
    )
    parser.add_argument("--epoch-sleep", type=float, default=0.0, help="'training' s per epoch")
    parser.add_argument("--json", type=Path, help="also save the raw results here")
    parser.add_argument("--from-json", type=Path, help="report saved results, running nothing")
    parser.add_argument(
        "--also-json",
        type=Path,
        action="append",
        default=[],
        help="add the table of another saved run (repeatable)",
    )
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    given = sys.argv[1:] if argv is None else list(argv)
    command = f"python bench/storage_scaling.py {shlex.join(given)}".rstrip()
    others = [load_saved(path) for path in args.also_json]
    rows, meta = load_saved(args.from_json) if args.from_json else run_all(args, command)
    if args.json:
        rows_data = [dataclasses.asdict(row) for row in rows]
        args.json.write_text(json.dumps({"rows": rows_data, "meta": meta}))
    if args.from_json:
        meta["rendered"] = command
    results_file.append_run(args.out, report(rows, meta, others))
    print("\n".join(results_table(rows)))
    print(f"appended to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
