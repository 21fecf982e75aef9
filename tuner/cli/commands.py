"""One handler per command: read its arguments, call the layers below, print what they say.

Each imports what it needs when it runs, so ``tuner --help`` and ``tuner status`` stay instant.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tuner.errors import TunerError

if TYPE_CHECKING:
    from tuner.run.request import SearchRequest
    from tuner.search.storage import ResilientStorage
    from tuner.search.warm_start import WarmStart

EXIT_USER_ERROR = 2


def search_command(args: argparse.Namespace) -> None:
    from tuner.results import tables as reporting
    from tuner.run import confirm, driver, launcher
    from tuner.search.deadline import Deadline

    _before_trials()
    if args.queue or args.priority is not None:
        _queue_search(args)
        return
    started, wall = time.monotonic(), time.time()
    if args.minutes is not None and args.minutes <= 0:
        raise TunerError(f"--minutes {args.minutes:g}: give a time budget above 0.")
    slots = launcher.plan_slots(args.workers, args.gpus, args.per_gpu)
    session = driver.open_search(_search_request(args), print, slots)
    ends_at = None
    if args.minutes is not None:
        search = session.context.config.search
        ends_at = Deadline(
            wall + 60 * args.minutes, args.minutes, len(slots), search.confirm_top,
            search.confirm_seeds,
        )  # fmt: skip
    outcome = driver.run_search(session, slots, print, ends_at)
    confirmation = confirm.confirm_search(session, slots, outcome, print)
    print(reporting.search_summary(session, outcome, time.monotonic() - started, confirmation))


def _queue_search(args: argparse.Namespace) -> None:
    """`tuner search --queue`: the study created and checked as a search would, then queued."""
    from tuner.run import driver
    from tuner.search import confirm, deadline, queue
    from tuner.search import study as study_mod
    from tuner.search.storage import redact

    if not args.queue:
        raise TunerError("--priority goes with --queue (a search with its own workers has none).")
    if args.workers is not None or args.gpus is not None or args.minutes is not None:
        raise TunerError(
            "--queue starts no workers here: drop --workers/--gpus/--minutes and run `tuner "
            "serve` (with them) where the trials should run."
        )
    session = driver.open_search(_search_request(args), print)
    study = session.pinned.study
    deadline.store(study, None)  # a pool has no end time: an earlier run's must not stop it
    queue.queue_study(study, args.priority or 0)
    storage = "" if args.storage is None else f" --storage {redact(session.storage_url)}"
    print(
        f"queued study {study.study_name!r} at priority {args.priority or 0}: "
        f"{study_mod.finished_count(study)} of {study_mod.stored_budget(study)} trials finished."
        f"\nRun its trials with `tuner serve{storage} --workers N` (or --gpus LIST); follow "
        f"and change the queue with `tuner queue{storage}`."
    )
    if session.context.config.search.confirm_top:
        print(confirm.left_to_the_user(study.study_name, storage))


def _search_request(args: argparse.Namespace) -> SearchRequest:
    """The study `tuner search` or `tuner submit` was asked for (created, or continued)."""
    from tuner.run.request import SearchRequest

    return SearchRequest(
        args.config, tuple(args.set), args.study, args.trials, args.storage, args.artifacts,
        _warm_start(args),
    )  # fmt: skip


def _warm_start(args: argparse.Namespace) -> WarmStart | None:
    from tuner.search.warm_start import WarmStart

    return WarmStart.parse(args.warm_start, args.warm_start_storage, args.warm_start_top)


def _before_trials() -> None:
    """Set up a command that runs trials, before it does any work.

    It stops on Ctrl-C/SIGTERM between steps; a bad $TUNER_PROGRESS_SECONDS fails now rather
    than once data is prepared. tuner reports through its progress and summary (failed
    trials' reasons included): Optuna's log lines and per-trial tracebacks would break a bar.
    """
    import optuna

    from tuner.progress import interval_seconds
    from tuner.run import signals

    interval_seconds()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    signals.stop_on_signals()


def prepare_command(args: argparse.Namespace) -> None:
    from tuner.config import load_config
    from tuner.run.host import prepare_ahead

    for line in prepare_ahead(load_config(args.config, args.set).data):
        print(line)


def config_command(args: argparse.Namespace) -> None:
    """`tuner config show`: the full config a search would use, or the one a study stored."""
    from tuner.config import load_config, to_yaml

    stored = args.study is not None or args.storage is not None
    if stored and (args.config is not None or args.set):
        raise TunerError(
            "--study/--storage show a stored study's config, CONFIG and --set a file's: give "
            "one or the other."
        )
    if stored:
        from tuner.search import study
        from tuner.search.storage import open_storage, storage_url

        storage = open_storage(storage_url(args.storage), must_exist=True)
        name = args.study or study.only_study(storage, required=True)
        config = study.load_pinned(storage, name).config
    else:
        config = load_config(args.config, args.set)
    print(to_yaml(config), end="")


def submit_command(args: argparse.Namespace) -> None:
    from tuner.run import slurm, submit

    shape = slurm.ArrayShape(
        args.workers, args.partition, args.gpus_per_worker, args.cpus_per_worker, args.mem,
        args.time, args.grace, tuple(args.sbatch_arg),
    )  # fmt: skip
    request = submit.SubmitRequest(
        _search_request(args), shape, args.logs, args.dry_run, args.pool, args.idle_exit,
        args.priority,
    )  # fmt: skip
    submit.run(request, print, lambda line: print(line, file=sys.stderr))


def _join_study(args: argparse.Namespace) -> tuple[str, str, ResilientStorage, str]:
    """Storage URL, artifacts URI, storage and study name for a command that runs trials."""
    from tuner.search import study
    from tuner.search.storage import artifacts_uri, open_storage, storage_url

    _before_trials()
    url, artifacts = storage_url(args.storage), artifacts_uri(args.artifacts)
    storage = open_storage(url, must_exist=True)
    return url, artifacts, storage, args.study or study.only_study(storage, required=True)


def worker_command(args: argparse.Namespace) -> None:
    import torch

    from tuner.run import launcher, workers
    from tuner.run.identity import WorkerIdentity
    from tuner.run.progress import SearchProgress
    from tuner.search import study
    from tuner.search.storage import redact

    url, artifacts, storage, name = _join_study(args)
    if args.gpus:  # one process per GPU slot, each pinned before torch starts
        slots = launcher.plan_slots(None, args.gpus, args.per_gpu)
        pinned = study.load_pinned(storage, name)
        logs = Path("tuner-logs") / name
        run = launcher.Launcher(pinned.study, slots, url, artifacts, logs, print)
        outcome = run.run(pinned.config.search.max_consecutive_failures)
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        identity = WorkerIdentity(index=args.worker_index, gpu=os.environ.get("TUNER_GPU"))
        request = workers.JoinRequest(name, url, artifacts, identity, args.device)
        pinned, context = workers.join(request)
        progress = None
        print(f"worker {identity.name}: data {context.placement.describe()}")
        if not args.quiet:
            print(f"worker {identity.name}: study {name!r} in {redact(url)}, on {context.device}")
            progress = SearchProgress(pinned.study, pinned.config.search.trials)
        try:
            outcome = workers.run_worker(pinned.study, context, (progress,) if progress else ())
        finally:
            if progress:
                progress.close()
    print(
        f"worker done: study {name!r} has {outcome.finished} of {outcome.budget} trials finished"
        + (f"; STOPPED EARLY: {outcome.stopped_reason}" if outcome.stopped_reason else "")
    )


def serve_command(args: argparse.Namespace) -> None:
    """`tuner serve`: one pool worker here, or a launcher of one per slot (--workers, --gpus)."""
    import functools

    from tuner.run import launcher, pool, pool_launcher
    from tuner.run.identity import WorkerIdentity
    from tuner.search.storage import artifacts_uri, redact, storage_url

    _before_trials()
    say = functools.partial(print, flush=True)
    url, artifacts = storage_url(args.storage), artifacts_uri(args.artifacts)
    if args.idle_exit is not None and args.idle_exit < 0:
        raise TunerError(f"--idle-exit {args.idle_exit:g}: give minutes, 0 or more.")
    many = args.gpus is not None or (args.workers or 1) > 1
    if args.worker_index is None and many:
        slots = launcher.plan_slots(args.workers, args.gpus, args.per_gpu)
        where = f"on {launcher.describe_gpus(slots)}" if slots[0].gpu else "on this host"
        say(f"pool of {len(slots)} workers {where} serving the queued studies in {redact(url)}")
        pool_launcher.PoolLauncher(slots, url, artifacts, args.idle_exit, say).run()
        return
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    identity = WorkerIdentity(index=args.worker_index, gpu=os.environ.get("TUNER_GPU"))
    idle = None if args.idle_exit is None else 60 * args.idle_exit
    if args.worker_index is None:
        say(f"pool worker {identity.name} serving the queued studies in {redact(url)}")
    ran = pool.serve(pool.PoolRequest(url, artifacts, identity, args.device, idle), say)
    say(f"pool worker {identity.name} done: ran {ran} trials")


def queue_command(args: argparse.Namespace) -> None:
    """`tuner queue`: list the queued studies, or change one."""
    from tuner.results import tables
    from tuner.search import queue
    from tuner.search import study as study_mod
    from tuner.search.storage import open_storage, storage_url

    storage = open_storage(storage_url(args.storage), must_exist=True)
    changes = args.priority is not None or args.trials is not None
    if args.action == "list":
        if args.name is not None or changes:
            raise TunerError(
                "`tuner queue` lists; change a study with `tuner queue set STUDY --priority P "
                "--trials N` (or pause, resume, cancel STUDY)."
            )
        print(tables.queue_table(queue.queued_studies(storage)))
        return
    if args.name is None:
        raise TunerError(f"`tuner queue {args.action}` needs the study: tuner queue "
                         f"{args.action} STUDY (`tuner queue` lists them).")  # fmt: skip
    if (args.action == "set") != changes:
        raise TunerError("--priority and --trials go with `tuner queue set STUDY`, and it needs "
                         "at least one of them.")  # fmt: skip
    if args.trials is not None:
        if args.trials < 1:
            raise TunerError(f"--trials {args.trials}: a budget is 1 trial or more.")
        queue.change(storage, args.name)  # refuses a study that is not queued, before any change
        study_mod.set_budget(study_mod.load_pinned(storage, args.name), args.trials)
    state = {"pause": queue.PAUSED, "resume": queue.QUEUED, "cancel": queue.CANCELLED}
    entry = queue.change(storage, args.name, state.get(args.action), args.priority)
    print(f"study {args.name!r}: {queue.describe_change(args.action, entry)}")


def status_command(args: argparse.Namespace) -> None:
    from tuner.results import tables as reporting
    from tuner.search import queue, study
    from tuner.search.storage import open_storage, storage_url

    storage = open_storage(storage_url(args.storage), must_exist=True)
    print(reporting.studies_table(storage))
    queued = queue.queued_studies(storage)
    if queued:
        print(f"\nqueue (served by `tuner serve` pools):\n{reporting.queue_table(queued)}")
    name = args.study or study.only_study(storage, required=False)
    if name:
        pinned = study.load_pinned(storage, name)
        table = reporting.trials_table(pinned.study)
        print()
        print(reporting.study_details(pinned.study, table))
        if args.csv:
            table.to_csv(args.csv, index=False)
            print(f"\ntrials table written to {args.csv}")


def export_best_command(args: argparse.Namespace) -> None:
    from tuner.results import export
    from tuner.search import confirm, study
    from tuner.search.storage import artifact_store, artifacts_uri, open_storage, storage_url

    storage = open_storage(storage_url(args.storage), must_exist=True)
    name = args.study or study.only_study(storage, required=True)
    pinned = study.load_pinned(storage, name)
    store = artifact_store(artifacts_uri(args.artifacts), must_exist=True)
    trial, confirmation = args.trial, None
    clashing = {"--trial": trial is not None, "--confirmed": args.confirmed, "--refit": args.refit}
    if args.soup and any(clashing.values()):
        given = " and ".join(name for name, on in clashing.items() if on)
        raise TunerError(
            f"--soup averages the best trial with the next ones as the search left them; "
            f"drop {given}, or --soup."
        )
    if args.confirmed and args.trial is not None:
        raise TunerError("--confirmed picks the trial itself; drop --trial.")
    chosen = None
    if args.confirmed:
        chosen = confirm.confirmed_export(storage, pinned)
    elif trial is None and not args.soup:
        chosen = confirm.default_export(storage, pinned)
    if chosen is not None:
        pinned, trial, confirmation = chosen.pinned, chosen.trial, chosen.summary
        print(f"confirmed winner: {chosen.summary['verdict']}")
        if not args.confirmed:
            print("(the search's confirm runs chose it; --trial N exports another trial)")
    request = export.ExportRequest(
        args.out,
        args.force,
        args.format.split(","),
        confirmation,
        args.refit,
        args.device,
        args.soup,
    )
    result = export.export_trial(pinned, store, request, trial_number=trial, say=print)
    print(export.describe(result))


def confirm_command(args: argparse.Namespace) -> None:
    from tuner.results import tables as reporting
    from tuner.run import workers
    from tuner.run.confirm import run_pending
    from tuner.run.identity import WorkerIdentity
    from tuner.run.progress import SearchProgress
    from tuner.search import confirm, study

    url, artifacts, storage, name = _join_study(args)
    parent = study.load_pinned(storage, name)
    linked = confirm.open_linked(storage, parent)
    confirm.plan(parent, linked, args.top, args.seeds)
    candidates = len(confirm.results(parent, linked).results)
    if candidates < args.top:
        print(f"study {name!r} has only {candidates} complete trial(s): confirming those.")
    pending = confirm.pending_runs(linked)
    print(
        f"confirming the top {candidates} trial(s) of {name!r} with {args.seeds} fresh seed(s) "
        f"each: {pending} run(s) to go, kept in study {linked.study.study_name!r}."
    )
    if pending:
        request = workers.JoinRequest(
            linked.study.study_name, url, artifacts, WorkerIdentity(), args.device
        )
        linked, context = workers.join(request)
        progress = SearchProgress(linked.study, linked.config.search.trials)
        try:
            run_pending(linked, context, (progress,))
        finally:
            progress.close()
    confirmation = confirm.results(parent, linked)
    print()
    print(reporting.confirm_table(confirmation))
    if confirmation.missing:
        print(
            f"{confirmation.missing} run(s) did not complete; run the same command again to "
            "retry them."
        )
    elif confirmation.winner is not None:
        print(f"\nnext: tuner export-best --study {name} --confirmed --out best/")


def dashboard_command(args: argparse.Namespace) -> None:
    from tuner.results import dashboard
    from tuner.search.storage import (
        artifact_store,
        artifacts_uri,
        open_storage,
        redact,
        storage_url,
    )

    url = storage_url(args.storage)
    storage = open_storage(url, must_exist=True)
    store = artifact_store(artifacts_uri(args.artifacts))
    server = dashboard.bind(args.host, args.port)
    studies, written = dashboard.backfill_notes(storage)
    warning = dashboard.exposure_warning(args.host, args.port)
    if warning:
        print(warning, file=sys.stderr)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"optuna-dashboard for {redact(url)} ({studies} tuner studies; {written} notes written) "
        f"at http://{host}:{args.port}/dashboard - Ctrl-C stops it.",
        flush=True,
    )
    dashboard.serve(server, storage, store)
    print("dashboard stopped.")


def report_command(args: argparse.Namespace) -> None:
    from tuner.results import report
    from tuner.search import study
    from tuner.search.storage import open_storage, storage_url

    storage = open_storage(storage_url(args.storage), must_exist=True)
    name = args.study or study.only_study(storage, required=True)
    print(report.describe(report.write_report(study.load_pinned(storage, name), args.out)))


def predict_command(args: argparse.Namespace) -> int:
    from tuner.results import predict

    outcome = predict.predict(args.model_dir, args.images, top_k=args.top_k)
    if args.json:
        if outcome.predictions:
            print(predict.format_json_lines(outcome))
    else:
        print(predict.format_table(outcome))
    for path, why in outcome.bad_files:
        print(f"tuner predict: skipped {path}: {why}", file=sys.stderr)
    return EXIT_USER_ERROR if outcome.bad_files else 0
