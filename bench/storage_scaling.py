"""Storage scaling benchmark (issue 3): cheap trials against PostgreSQL and SQLite.

Run from the repository root:

    python bench/storage_scaling.py [--trials N] [--out bench/RESULTS.md]

Every configuration (storage x sampler x workers) gets a fresh study that is deleted
afterwards. The workers are separate processes ("spawn"), each opening the storage itself
with ``tuner.storage.open_storage`` and joining the study with the product's sampler and
pruner. A trial does to the storage what a real tuner trial does (sample the real search
space, record params/worker/origin, then per epoch: curves, report, should_prune), with the
training replaced by nothing, so a trial's wall time is the storage + sampler + Optuna cost.
Workers share one budget of finished trials, as ``tuner worker`` does.

This is a benchmark, not a test: nothing is asserted; the numbers go to RESULTS.md.
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

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SECTION = "## Storage scaling (issue 3)"
SETUP_TIMEOUT = 300.0
RUN_TIMEOUT = 900.0
SATURATED = 0.85  # share of all cores busy from which a run counts as CPU-bound

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


def open_tuner_storage(url: str) -> Any:
    """The product's storage: WAL + busy timeout on SQLite, outage retries, pre-ping."""
    try:
        from tuner.search.storage import open_storage
    except ImportError:  # an older layout kept it in tuner.study
        from tuner.search.study import open_storage  # type: ignore[attr-defined,no-redef]
    return open_storage(url)


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
    from tuner.config import load_config
    from tuner.search import study as study_mod
    from tuner.search.space import sample

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = load_config(None, list(job.overrides))
    epochs = config.train.epochs
    worker_name = f"bench/{job.index}"
    storage = open_tuner_storage(job.url)
    study_mod.watch_trials(storage, config.search)  # heartbeats on, as load_pinned does
    sampler = study_mod.make_sampler(config.search, job.study, worker_name)
    pruner = study_mod.make_pruner(config.search, epochs)
    clock = Clock()
    instrument(storage, sampler, pruner, clock)
    study = optuna.load_study(study_name=job.study, storage=storage, sampler=sampler, pruner=pruner)
    worker_attr = {"host": platform.node(), "worker": worker_name, "pid": os.getpid()}

    def objective(trial: optuna.Trial) -> float:
        params = sample(trial, config.space)
        trial.set_user_attr("origin_trial", trial.number)
        trial.set_user_attr("params", dataclasses.asdict(params))
        trial.set_user_attr("worker", worker_attr)
        curve = synthetic_curve(params, trial.number, epochs)
        for epoch, accuracy in enumerate(curve):
            if job.epoch_sleep:
                time.sleep(job.epoch_sleep)
            done = curve[: epoch + 1]
            # the four per-epoch curves of tuner.objective._record_curves
            trial.set_user_attr("val_accuracy", done)
            trial.set_user_attr("train_loss", [1.0 - a for a in done])
            trial.set_user_attr("epoch_seconds", [job.epoch_sleep] * len(done))
            trial.set_user_attr("frozen_depth", [params.freeze_depth] * len(done))
            trial.report(accuracy, epoch)
            if trial.should_prune():
                trial.set_user_attr("stopped", f"pruned after epoch {epoch}")
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")
        trial.set_user_attr("best_epoch", max(range(epochs), key=curve.__getitem__))
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
    def machine_busy(self) -> float:
        """Share of the cores busy with the benchmark and with other load together."""
        return self.cores_busy + (self.foreign_cores or 0.0) / self.cores

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
    from tuner import config as config_mod
    from tuner.search import attrs

    storage = open_tuner_storage(url)
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


def describe_method() -> list[str]:
    """What the benchmark does and what the columns mean."""
    return [
        "What a trial does: the product's search space (`tuner.space.sample`), sampler "
        "(`tuner.study.make_sampler`: multivariate, grouped TPE with constant liar and 8 "
        "start-up trials; *random* rows use its RandomSampler as a baseline) and pruner "
        "(`make_pruner`: Hyperband over the default 4 epochs), the storage from "
        "`tuner.storage.open_storage(url)` with heartbeats on (`tuner.study.watch_trials`), "
        "and the storage writes of `tuner.objective`: `origin_trial`, `params`, `worker`, "
        "then per epoch the four curve attributes, `report` and `should_prune`, and at the "
        "end `best_epoch` or `stopped`. After each trial the worker checks the shared budget "
        "as `run_worker` does (`finished_count`, `stored_budget`). The checkpoint upload of "
        "the top-k trials (an artifact-store write) is left out. Each worker is a spawned "
        "process with its own storage; the clock starts once all of them have joined the "
        "study. Every configuration ran in a fresh study, deleted afterwards.",
        "",
        "Columns: *Trials* finished (complete + pruned; workers may overshoot the budget by "
        "up to workers - 1). *Cores busy*: CPU time of the workers (and the local PostgreSQL "
        "server) over wall time x cores. *Other load*: how many cores, on average, the rest of "
        "the machine kept busy meanwhile (the benchmark's parent, workers exiting, anything "
        "else running; it competes with the benchmark). *ms/trial* is the wall time of one "
        "trial inside a worker, split into database calls on the worker's main thread "
        "(*storage*), the sampler and the pruner (their own database reads count as "
        "storage), and the rest (Optuna's bookkeeping, the objective, waiting for a CPU). "
        "*Worker CPU ms*: the "
        "worker process's CPU time per trial. *Checkouts*: connection-pool checkouts, each a "
        "`SELECT 1` round trip on PostgreSQL (`pool_pre_ping=True`). *PG server CPU*: CPU "
        "time of all local postgres processes during the run, per finished trial.",
    ]


def analysis(rows: Sequence[Row], pg: dict[str, str] | None) -> list[str]:
    """Findings computed from the rows."""
    done = [r for r in rows if r.ok]

    def find(backend: str, sampler: str, workers: int) -> Row | None:
        wanted = (backend, sampler, workers)
        return next((r for r in done if (r.backend, r.sampler, r.workers) == wanted), None)

    lines = ["### Where the bottleneck is", ""]
    measured = [r for r in done if r.foreign_cores is not None]
    busiest = max((r.foreign_cores or 0.0 for r in measured), default=0.0)
    if busiest >= 0.3:
        calm = min(measured, key=lambda r: r.foreign_cores or 0.0)
        lines.append(
            f"- Caveat: other work shared the machine during this run (up to {busiest:.1f} "
            "cores of *Other load*), so its times, trials/min and scaling with workers are "
            "pessimistic. The per-trial counts (calls, statements, connections) do not depend "
            f"on it; the least disturbed row is {calm.backend} {calm.sampler} with "
            f"{workers_text(calm.workers)} ({calm.foreign_cores:.1f} cores of other load)."
        )
    for backend in ("postgresql", "sqlite"):
        series = [r for r in done if (r.backend, r.sampler) == (backend, "tpe")]
        if not series:
            continue
        one = series[0]
        steps = "; ".join(
            f"{workers_text(r.workers)}: {r.per_minute:.0f}/min, {100 * r.cores_busy:.0f} % of the "
            f"cores busy with it{other_load(r)}, {r.ms('wall'):.0f} ms/trial of which "
            f"{r.ms('cpu'):.0f} ms on a CPU"
            for r in series
        )
        best = max(series, key=lambda r: r.per_minute)
        text = (
            f"- {backend}, TPE ({steps}). Best: {best.per_minute:.0f} trials/min with "
            f"{workers_text(best.workers)}, {best.per_minute / one.per_minute:.2f}x one worker."
        )
        text += " " + bottleneck(series, backend)
        lines.append(text)
    for backend in ("postgresql", "sqlite"):
        lines.extend(contention(done, backend))
    pg1 = find("postgresql", "tpe", 1)
    if pg1 is not None:
        server = pg1.server_ms or 0.0
        calls = pg1.mean("calls")
        lines.append(
            f"- One PostgreSQL worker: a trial takes {pg1.ms('wall'):.0f} ms, "
            f"{pg1.ms('storage'):.0f} ms of it in {calls:.0f} storage calls "
            f"({pg1.mean('statements'):.0f} SQL statements + {pg1.mean('checkouts'):.0f} "
            f"pre-ping round trips), about {pg1.ms('storage') / calls:.1f} ms per call. The "
            f"worker's own CPU is {pg1.ms('cpu'):.0f} ms per trial and the server's "
            f"{server:.0f} ms: the per-trial storage overhead is mostly client-side work "
            "(SQLAlchemy ORM sessions and psycopg) and round trips, not database load. The "
            "sampler takes "
            f"{pg1.ms('sampler'):.1f} ms and the pruner {pg1.ms('pruner'):.1f} ms per trial."
        )
        top = sorted(pg1.by_method.items(), key=lambda kv: -kv[1])[:6]
        listed = ", ".join(f"`{m}` {n / len(pg1.records):.1f}" for m, n in top)
        lines.append(
            f"- Storage calls per trial by method (PostgreSQL, TPE, 1 worker): {listed}. The "
            "four curve attributes written every epoch are most of `set_trial_user_attr`; "
            "`get_study_id_from_name` comes from the Hyperband pruner, which builds a "
            "per-bracket `Study` (`optuna/pruners/_hyperband.py`, `_create_bracket_study`; "
            "`Study.__init__` looks the study up by name) at every trial start, sample, "
            "prune and tell (`optuna.pruners._filter_study`)."
        )
    sq1 = find("sqlite", "tpe", 1)
    if pg1 is not None and sq1 is not None:
        lines.append(
            f"- SQLite, one worker: {sq1.ms('wall'):.0f} ms/trial ({sq1.ms('storage'):.0f} ms "
            f"storage) against PostgreSQL's {pg1.ms('wall'):.0f} ms: no network round trips "
            "and no server process, but one write lock on the file for all workers."
        )
    tpe_growth = [r for r in done if r.sampler == "tpe" and r.workers == 1]
    for r in tpe_growth:
        lines.append(
            f"- Growth with the study ({r.backend}, 1 worker, {r.finished} trials): the "
            f"sampler goes from {r.ms('sampler', r.quarter(0)):.1f} to "
            f"{r.ms('sampler', r.quarter(-1)):.1f} ms per trial between the first and the "
            f"last quarter, storage from {r.ms('storage', r.quarter(0)):.0f} to "
            f"{r.ms('storage', r.quarter(-1)):.0f} ms."
        )
    for backend in ("postgresql", "sqlite"):
        tpe, rnd = find(backend, "tpe", 1), find(backend, "random", 1)
        if tpe and rnd:
            lines.append(
                f"- RandomSampler baseline ({backend}, 1 worker): {rnd.ms('wall'):.0f} ms/trial "
                f"({rnd.ms('sampler'):.1f} ms sampler, {rnd.mean('calls'):.0f} storage calls, "
                f"{rnd.pruned} of {rnd.finished} pruned) against TPE's {tpe.ms('wall'):.0f} ms "
                f"({tpe.ms('sampler'):.1f} ms sampler, {tpe.mean('calls'):.0f} calls, "
                f"{tpe.pruned} of {tpe.finished} pruned), {rnd.per_minute:.0f} against "
                f"{tpe.per_minute:.0f} trials/min; storage "
                f"{rnd.ms('storage') / rnd.mean('calls'):.2f} against "
                f"{tpe.ms('storage') / tpe.mean('calls'):.2f} ms per call. TPE's own time is "
                "a small part of a cheap trial at this study size."
            )
    served = [r for r in done if r.server_ms and r.backend == "postgresql"]
    if served:
        low = min(served, key=lambda r: r.workers)
        high = max(served, key=lambda r: r.workers)
        lines.append(
            f"- PostgreSQL server CPU: {low.server_ms:.0f} ms per trial with "
            f"{workers_text(low.workers)}, {high.server_ms:.0f} ms with {high.workers} (more "
            "running trials "
            "to re-read, CPU contention; other sessions on the server count too). At the "
            f"lower figure one server core serves about {60000 / low.server_ms:.0f} trials/min "
            "when the workers run on other machines."
        )
    return lines


SLOWDOWN_REASONS = {
    "_get_trials": "Optuna's cache keeps finished trials only, so every read fetches each "
    "still-running trial again in full (params, attributes, intermediate values), one per "
    "other worker: a read costs more the more workers there are",
    "_create_new_trial": "it locks the study row (`StudyModel.find_or_raise_by_id(..., "
    "for_update=True)` in `RDBStorage._create_new_trial`, to number the trial), so trial "
    "creation is serialised per study",
}
SQLITE_LOCK = (
    "SQLite lets one transaction write at a time: a blocked writer waits in SQLite's busy "
    "handler, which sleeps and retries (sleeps of up to 100 ms) within the 60 s timeout "
    "`open_storage` sets, so writers queue and time is lost between their turns"
)


def bottleneck(series: Sequence[Row], backend: str) -> str:
    """One or two sentences on what limits a series of runs (1, 2, ... workers)."""
    one = series[0]
    serial = (
        "One worker alone keeps about one core busy: a trial is serial CPU work ("
        + ("client, then server" if backend == "postgresql" else "SQLite runs in the worker")
        + "), so more workers can only help while there are idle cores."
    )
    saturated = next((r for r in series if r.machine_busy >= SATURATED), None)
    if saturated is not None:
        where = (
            "Already with 1 worker"
            if saturated.workers == 1
            else f"From {saturated.workers} workers on"
        )
        return (
            f"{serial if one.cores_busy * one.cores >= SATURATED else ''} {where} the "
            f"{saturated.cores} cores are saturated ({100 * saturated.machine_busy:.0f} % busy, "
            "other load included): more workers only queue for a CPU, so ms/trial grows with "
            "them. That is this machine's limit (workers and database share its cores), not "
            "the storage design's."
        ).strip()
    slower = [r for r in series[1:] if r.per_minute < one.per_minute]
    if slower:
        return (
            f"With {slower[0].workers} workers it is slower than with one although the cores "
            "are not saturated: the storage's locking limits it, not the CPU."
        )
    return serial if one.cores_busy * one.cores >= SATURATED else ""


def workers_text(count: int) -> str:
    return f"{count} worker" + ("" if count == 1 else "s")


def other_load(row: Row) -> str:
    if row.foreign_cores is None or row.foreign_cores < 0.1:
        return ""
    return f" + {row.foreign_cores:.1f} cores of other load"


def contention(done: Sequence[Row], backend: str) -> list[str]:
    """Which storage calls slow down from one worker to the most workers, and why."""
    series = [r for r in done if (r.backend, r.sampler) == (backend, "tpe") and r.method_time]
    if len(series) < 2:
        return []
    one, most = series[0], max(series, key=lambda r: r.workers)

    def per_call(row: Row, method: str) -> float:
        calls = row.by_method.get(method, 0)
        return 1000.0 * row.method_time.get(method, 0.0) / calls if calls else float("nan")

    frequent = [m for m in most.method_time if most.by_method[m] >= len(most.records)]
    growth = {m: per_call(most, m) / per_call(one, m) for m in frequent if one.method_time.get(m)}
    if not growth:
        return []
    heavy = sorted(most.method_time, key=lambda m: -most.method_time[m])[:3]
    listed = ", ".join(
        f"`{m}` {per_call(one, m):.1f} -> {per_call(most, m):.1f} ms "
        f"({1000 * most.method_time[m] / len(most.records):.0f} ms per trial)"
        for m in heavy
    )
    typical = statistics.median(growth.values())
    text = (
        f"- {backend}: the costliest storage calls with {most.workers} workers, time per call "
        f"with 1 -> {most.workers} workers: {listed}. The typical call is {typical:.0f}x "
        "slower: all of them wait for a CPU."
    )
    worst = max((m for m in heavy if m in growth), key=lambda m: growth[m], default=None)
    if worst is None:
        return [text]
    if growth[worst] > 1.3 * typical:
        text += f" `{worst}` slows down most ({growth[worst]:.0f}x)"
        reason = SLOWDOWN_REASONS.get(worst)
        text += f": {reason}." if reason else "."
    if backend == "sqlite":
        text += f" On top of that, {SQLITE_LOCK}."
    return [text]


def on_paper(rows: Sequence[Row], pg: dict[str, str] | None) -> list[str]:
    """How far one study database scales: connections, queries per trial, the gRPC proxy."""
    done = [r for r in rows if r.ok]
    peaks = [r.peak_connections / r.workers for r in done if r.peak_connections]
    per_worker = max(peaks) if peaks else 2.0
    max_conn = int(pg["max_connections"]) if pg else 100
    reserved = int(pg["superuser_reserved_connections"]) if pg else 3
    fits = (max_conn - reserved) // max(1, math.ceil(per_worker))
    pg_tpe = [r for r in done if r.backend == "postgresql" and r.sampler == "tpe"]
    stmts = statistics.fmean(r.mean("statements") for r in pg_tpe) if pg_tpe else float("nan")
    served = [r.server_ms for r in done if r.server_ms]
    capacity = f"{60000 / min(served):.0f}" if served else "several hundred"
    reads = (
        statistics.fmean(r.by_method.get("_get_trials", 0) / len(r.records) for r in pg_tpe)
        if pg_tpe
        else 8.0
    )
    beats = sum(r.heartbeats for r in done) / max(1, sum(len(r.records) for r in done))
    return [
        "",
        "### How far the design scales (on paper)",
        "",
        "- Connections. `tuner.storage.open_storage` passes only `pool_pre_ping=True` "
        "(PostgreSQL) or `connect_args={'timeout': 60}` (SQLite) as "
        "`RDBStorage(engine_kwargs=...)`, and Optuna adds pool settings only for MySQL "
        "(`optuna/storages/_rdb/storage.py`, `_set_default_engine_kwargs_for_mysql`). So each "
        "worker gets SQLAlchemy's default `QueuePool` (pool_size 5, max_overflow 10: up to 15 "
        "connections). Sessions are per thread (`scoped_session`), so a worker in fact holds "
        "one connection for its main thread and one for its heartbeat thread "
        "(`optuna/storages/_heartbeat.py`, `HeartbeatThread`); measured peak here: "
        f"{per_worker:.1f} server connections per worker. With max_connections {max_conn} "
        f"({reserved} reserved for superusers) one server takes about {fits} workers. Hundreds "
        "of workers need either PgBouncer in front of PostgreSQL (transaction pooling; "
        "psycopg 3 prepares a statement after 5 runs, so PgBouncer >= 1.21 with "
        "`max_prepared_statements`, or `prepare_threshold=None` on the client) or a much "
        "higher max_connections (one server process of a few MB per connection). A "
        "`pool_size=2, max_overflow=0` per worker would lose nothing, since a worker never "
        "uses more than two at once; `open_storage` would have to pass it.",
        f"- Queries per trial. A TPE trial here makes about {fmt(stmts, 0)} SQL statements plus "
        "one pre-ping round trip per storage call. Samplers and pruners read all trials of "
        "the study on every ask (`study.get_trials` -> `get_all_trials`), but `load_study` "
        "wraps an `RDBStorage` in `_CachedStorage` (`optuna/storages/__init__.py`, "
        "`get_storage`), which keeps finished trials in the worker and asks the database only "
        "for trials newer than the last finished one or still running "
        "(`_CachedStorage._read_trials_from_remote_storage` -> `RDBStorage._get_trials("
        "included_trial_ids=..., trial_id_greater_than=...)`). So the database work per trial "
        "stays about flat as the study grows (growth table); what grows is TPE's own CPU in "
        "the worker (it refits on the finished trials of its Hyperband bracket at every ask), "
        "plus one full read of the study by every worker that joins. What does grow with "
        "the number of workers: `included_trial_ids` is every trial still running, and each "
        "read fetches them again in full (params, attributes, intermediate values). A trial "
        f"here made {fmt(reads) if pg_tpe else 'about 8 (PostgreSQL not measured)'} such reads "
        "(sampling, each `should_prune`, the budget check); "
        "with W workers each read returns about W running trials, so the database work per "
        "trial grows with W and the study's total with W^2. For 300 workers and 5-minute "
        f"trials that is 300 x {reads:.0f} / 5 = {300 * reads / 5:.0f} reads a minute, each "
        "returning ~300 running trials with tens of rows each (one query per table): "
        "millions of rows a minute, and as much ORM work in the workers. After the connection "
        "count, that (not the write rate) is where one PostgreSQL would start to feel the "
        "study; the gRPC proxy does not change it, since its server reads through the same "
        "cache.",
        "- Heartbeats. With heartbeats on, each trial start runs `fail_stale_trials` (one "
        "`_get_stale_trial_ids` query) and each running trial writes a heartbeat every "
        "`search.heartbeat_seconds` (default 10 s; measured here "
        f"{beats:.1f} per trial, as these trials end within one interval): 300 workers add "
        "30 small writes per second.",
        "- Throughput needed. Real trials train a ResNet for minutes: W workers with T-minute "
        "trials need W / T trials per minute (300 workers x 5-minute trials = 60/min), a "
        "small fraction of what one PostgreSQL core serves at the measured server CPU per "
        f"trial (about {capacity}/min). The database's work is not what stops a study at "
        "hundreds of workers; its connection count is. SQLite is for one host: all writers "
        "take turns on one file lock (WAL lets readers work beside the one writer), and its "
        "locking is not safe on network file systems.",
        "- Optuna's gRPC storage proxy (experimental since 4.2, `optuna/storages/_grpc/`). "
        "`run_grpc_proxy_server(storage, host=..., port=13000, thread_pool=None)` serves a "
        "storage over gRPC with a `ThreadPoolExecutor(max_workers=10)` by default "
        "(`server.py`, `make_server`); its docstring asks for `get_storage(url)` (the cached "
        "storage) rather than a bare `RDBStorage`. Workers use `GrpcStorageProxy(host=..., "
        "port=...)` (`client.py`), which keeps its own trial cache (`GrpcClientCache`, the "
        "same incremental read through `GetTrials(included_trial_ids, "
        "trial_id_greater_than)`). Hundreds of workers then hold one gRPC channel each and "
        "only the proxy's threads hold database connections, so the connection limit goes "
        "away; the proxy (one Python process) becomes the fan-in point, and several proxies "
        "can front one database. Two gaps for tuner as it is: `GrpcStorageProxy` derives from "
        "`BaseStorage` only, not `BaseHeartbeat`, so `is_heartbeat_enabled` is false through "
        "it and tuner's heartbeat-based retry of dead workers' trials (`watch_trials`) would "
        "not run; and `open_storage` builds an `RDBStorage` from a URL, so workers would need "
        "a new `grpc://host:port` storage option. The client's docstring also warns that "
        "`delete_study` can misbehave with SQLite behind the proxy (stale cache). grpcio is "
        "not installed here, so the proxy was not measured.",
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
) -> list[str]:
    """The section's text: how it was run, the tables, and what the measurements say."""
    sleep = meta["epoch_sleep"]
    training = "nothing" if not sleep else f"a {sleep} s sleep per epoch"
    return [
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
        *describe_method(),
        "",
        *results_table(rows),
        "",
        "How a trial's cost grows with the study (mean over the first and the last quarter of "
        "the study's trials, by trial number):",
        "",
        *growth_table(rows),
        "",
        *other_runs(others),
        *analysis(rows, meta["pg"]),
        *on_paper(rows, meta["pg"]),
    ]


def write_section(path: Path, body: list[str]) -> None:
    """Put our section into ``path``, replacing an earlier one and keeping everything else."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = "\n".join([SECTION, "", *body]).rstrip() + "\n"
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip() + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(SECTION))
        rest = text[end + 1 :] if end >= 0 else ""
        text = text[:start] + section + ("\n" + rest if rest else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


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
    parser.add_argument("--out", type=Path, default=Path("bench/RESULTS.md"))
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
    parser.add_argument("--from-json", type=Path, help="rewrite the report from saved results")
    parser.add_argument(
        "--also-json",
        type=Path,
        action="append",
        default=[],
        help="add the table of another saved run (repeatable)",
    )
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    others = [load_saved(path) for path in args.also_json]
    if args.from_json:
        rows, meta = load_saved(args.from_json)
    else:
        given = sys.argv[1:] if argv is None else list(argv)
        command = " ".join(["python bench/storage_scaling.py", *given])
        rows, meta = run_all(args, command)
    if args.json:
        rows_data = [dataclasses.asdict(row) for row in rows]
        args.json.write_text(json.dumps({"rows": rows_data, "meta": meta}))
    if args.from_json:
        given = sys.argv[1:] if argv is None else list(argv)
        meta["rendered"] = " ".join(["python bench/storage_scaling.py", *given])
    write_section(args.out, report(rows, meta, others))
    print("\n".join(results_table(rows)))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
