"""The ``tuner`` command line: parses, prints, exits. The work happens in the modules below."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from tuner.errors import TunerError

if TYPE_CHECKING:
    from tuner.search.storage import ResilientStorage
    from tuner.search.warm_start import WarmStart

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class _Command:
    """One subcommand: its parser's shared and own options, and the handler that runs it."""

    name: str
    help: str
    handler: Callable[[argparse.Namespace], int | None]
    shared: tuple[str, ...]  # keys of _shared_options(), in the order --help shows them
    add_arguments: Callable[[argparse.ArgumentParser], None]  # the command's own options


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tuner",
        description="Search how best to fine-tune a pretrained ResNet on your images (Optuna).",
    )
    parser.add_argument("--version", action="version", version=f"tuner {version('tuner')}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = _shared_options()
    for command in _COMMANDS:
        parents = [shared[name] for name in command.shared]
        sub = subparsers.add_parser(command.name, help=command.help, parents=parents)
        command.add_arguments(sub)
        sub.set_defaults(handler=command.handler)
    return parser


def _shared_options() -> dict[str, argparse.ArgumentParser]:
    """Options several commands take, each defined once in a parent parser (``parents=``)."""
    shared = {
        name: argparse.ArgumentParser(add_help=False)
        for name in ("study", "storage", "artifacts", "gpus", "device", "warm_start")
    }
    shared["study"].add_argument(
        "--study", help="study name (default: the only one in the storage)"
    )
    shared["storage"].add_argument(
        "--storage",
        help="study storage URL (default: $TUNER_STORAGE or "
        "sqlite:///tuner.db in the current directory)",
    )
    shared["artifacts"].add_argument(
        "--artifacts",
        help="checkpoint store: a folder, file:///shared/path or s3://bucket/prefix "
        "(default: $TUNER_ARTIFACTS or tuner-artifacts/ in the current directory)",
    )
    shared["gpus"].add_argument(
        "--gpus", metavar="LIST", help="one worker per listed GPU, e.g. --gpus 0,1,2,3"
    )
    shared["gpus"].add_argument(
        "--per-gpu", type=int, default=1, metavar="K", help="workers per GPU with --gpus (1)"
    )
    shared["device"].add_argument(
        "--device", help="override the study's train.device on this host (cpu, cuda, cuda:1)"
    )
    warm = shared["warm_start"]
    warm.add_argument("--warm-start", metavar="STUDY[,STUDY...]",
                      help="a new study first runs the best recipes of these earlier studies "
                      "that fit its space")  # fmt: skip
    warm.add_argument("--warm-start-storage", metavar="URL",
                      help="where the --warm-start studies are (default: --storage)")  # fmt: skip
    warm.add_argument("--warm-start-top", type=int, metavar="N",
                      help="best complete trials taken from each of them (3)")  # fmt: skip
    return shared


def _search_arguments(search: argparse.ArgumentParser) -> None:
    search.add_argument("config", nargs="?", type=Path, help="study YAML (default: built-in)")
    search.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set data.path=/data/pets",
    )
    search.add_argument("--trials", type=int, help="finished trials the study should end with")
    # not the shared --study: a new search names its study itself
    search.add_argument("--study", help="study name (default: search.study, or the file name)")
    search.add_argument(
        "--workers", type=int, help="worker processes on this host's default device (default 1)"
    )


def _prepare_arguments(prepare: argparse.ArgumentParser) -> None:
    prepare.add_argument("config", nargs="?", type=Path, help="study YAML (default: built-in)")
    prepare.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )


def _submit_arguments(submit: argparse.ArgumentParser) -> None:
    submit.add_argument(
        "config", nargs="?", type=Path, help="study YAML: create the study from it first"
    )
    submit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key of the study to create")  # fmt: skip
    submit.add_argument("--trials", type=int, help="the study's budget of finished trials")
    submit.add_argument("--workers", type=int, required=True, help="array tasks: one worker each")
    submit.add_argument("--partition", help="Slurm partition (default: the cluster's default)")
    submit.add_argument("--gpus-per-worker", type=int, default=0, metavar="G",
                        help="GPUs per task (--gpus-per-task: CUDA_VISIBLE_DEVICES)")  # fmt: skip
    submit.add_argument("--cpus-per-worker", type=int, default=1, metavar="C")
    submit.add_argument("--mem", metavar="M", help="memory per task, e.g. 32G")
    submit.add_argument("--time", metavar="T", help="time limit per task, e.g. 12:00:00")
    submit.add_argument("--grace", type=int, default=120, metavar="S",
                        help="seconds between SIGTERM and the time limit (120)")  # fmt: skip
    submit.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                        help="an extra sbatch option, e.g. --sbatch-arg=--qos=high")  # fmt: skip
    submit.add_argument("--logs", type=Path, help="task logs (default: tuner-logs/STUDY/slurm)")
    submit.add_argument("--dry-run", action="store_true", help="print the batch script only")


def _worker_arguments(worker: argparse.ArgumentParser) -> None:
    """Set by the local launcher for the processes it starts, so hidden from --help."""
    worker.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    worker.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    worker.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)


def _status_arguments(status: argparse.ArgumentParser) -> None:
    status.add_argument("--csv", type=Path, help="also write the trials table to this CSV file")


def _export_arguments(export: argparse.ArgumentParser) -> None:
    export.add_argument("--trial", type=int, help="export this trial number instead of the best")
    export.add_argument("--out", type=Path, default=Path("best"), help="output folder (best/)")
    export.add_argument("--force", action="store_true", help="replace an existing output folder")
    export.add_argument(
        "--format",
        default="safetensors",
        help="comma-separated: safetensors (always written), torchscript, onnx "
        "(needs the onnx extra); default safetensors",
    )
    export.add_argument(
        "--confirmed",
        action="store_true",
        help="export the winner of `tuner confirm` (best mean over fresh seeds)",
    )
    export.add_argument(
        "--refit",
        action="store_true",
        help="retrain the recipe on training + validation images for its best number of "
        "epochs and export that, tested beside the search's own checkpoint",
    )
    export.add_argument(
        "--soup",
        type=_at_least_one,
        metavar="K",
        help="export a greedy soup: the weights of up to K top trials averaged, each kept only "
        "if val accuracy does not drop (needs search.keep_checkpoints >= K), tested beside the "
        "best single trial",
    )


def _at_least_one(text: str) -> int:
    """argparse type of a count that must be 1 or more."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def _confirm_arguments(confirm: argparse.ArgumentParser) -> None:
    confirm.add_argument("--top", type=int, default=3, help="how many top trials to re-train (3)")
    confirm.add_argument("--seeds", type=int, default=3, help="fresh seeds per trial (3)")


def _dashboard_arguments(dashboard: argparse.ArgumentParser) -> None:
    dashboard.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)"
    )
    dashboard.add_argument("--port", type=int, default=8080, help="port to listen on (8080)")


def _report_arguments(report: argparse.ArgumentParser) -> None:
    report.add_argument(
        "--out", type=Path, default=Path("report"), help="output folder (report/; created)"
    )


def _predict_arguments(predict: argparse.ArgumentParser) -> None:
    predict.add_argument(
        "model_dir", type=Path, metavar="MODEL_DIR", help="folder written by export-best"
    )
    predict.add_argument(
        "images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files; folders are walked"
    )
    predict.add_argument("--top-k", type=int, default=3, help="classes shown per image (3)")
    predict.add_argument("--json", action="store_true", help="one JSON object per line and image")


_KEPT_WHEN_INTERRUPTED = {
    "search": "Finished trials are kept in the study. ",
    "worker": "Finished trials are kept in the study. ",
    "prepare": "Nothing half-built is kept in the data cache. ",
}
"""What an interrupted command leaves, said when Ctrl-C stops it."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        status = args.handler(args)
    except TunerError as exc:
        print(f"tuner {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        kept = _KEPT_WHEN_INTERRUPTED.get(args.command, "")
        print(
            f"\ntuner {args.command}: interrupted. {kept}Run the same command again to "
            "finish the rest.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return status or 0


def _search(args: argparse.Namespace) -> None:
    from tuner.results import tables as reporting
    from tuner.search import driver as search
    from tuner.search import launcher

    _before_trials()
    request = search.SearchRequest(
        args.config, tuple(args.set), args.study, args.trials, args.storage, args.artifacts,
        _warm_start(args),
    )  # fmt: skip
    started = time.monotonic()
    slots = launcher.plan_slots(args.workers, args.gpus, args.per_gpu)
    session = search.prepare(request, print)
    outcome = search.run(session, slots, print)
    print(reporting.search_summary(session, outcome, time.monotonic() - started))


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
    from tuner.search import signals

    interval_seconds()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    signals.stop_on_signals()


def _prepare(args: argparse.Namespace) -> None:
    from tuner.config import load_config
    from tuner.search.host import prepare_ahead

    for line in prepare_ahead(load_config(args.config, args.set).data):
        print(line)


def _submit(args: argparse.Namespace) -> None:
    from tuner.search import submit

    request = submit.SubmitRequest(
        args.config, tuple(args.set), args.study, args.trials, args.storage, args.artifacts,
        workers=args.workers, partition=args.partition, gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker, mem=args.mem, time=args.time, grace=args.grace,
        sbatch_args=tuple(args.sbatch_arg), logs=args.logs, dry_run=args.dry_run,
        warm_start=_warm_start(args),
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


def _worker(args: argparse.Namespace) -> None:
    import torch

    from tuner.search import launcher, study, workers
    from tuner.search.objective import WorkerIdentity
    from tuner.search.progress import SearchProgress
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


def _status(args: argparse.Namespace) -> None:
    from tuner.results import tables as reporting
    from tuner.search import study
    from tuner.search.storage import open_storage, storage_url

    storage = open_storage(storage_url(args.storage), must_exist=True)
    print(reporting.studies_table(storage))
    name = args.study or study.only_study(storage, required=False)
    if name:
        pinned = study.load_pinned(storage, name)
        table = reporting.trials_table(pinned.study)
        print()
        print(reporting.study_details(pinned.study, table))
        if args.csv:
            table.to_csv(args.csv, index=False)
            print(f"\ntrials table written to {args.csv}")


def _export_best(args: argparse.Namespace) -> None:
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
    if args.confirmed:
        if args.trial is not None:
            raise TunerError("--confirmed picks the trial itself; drop --trial.")
        chosen = confirm.confirmed_export(storage, pinned)
        pinned, trial, confirmation = chosen.pinned, chosen.trial, chosen.summary
        print(f"confirmed winner: {chosen.summary['verdict']}")
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


def _confirm(args: argparse.Namespace) -> None:
    from tuner.search import confirm, study, workers
    from tuner.search.objective import WorkerIdentity
    from tuner.search.progress import SearchProgress

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
            confirm.run(linked, context, (progress,))
        finally:
            progress.close()
    confirmation = confirm.results(parent, linked)
    print()
    print(confirm.format_table(confirmation))
    missing = candidates * args.seeds - sum(len(r.values) for r in confirmation.results)
    if missing:
        print(f"{missing} run(s) did not complete; run the same command again to retry them.")
    elif confirmation.winner is not None:
        print(f"\nnext: tuner export-best --study {name} --confirmed --out best/")


def _dashboard(args: argparse.Namespace) -> None:
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


def _report(args: argparse.Namespace) -> None:
    from tuner.results import report
    from tuner.search import study
    from tuner.search.storage import open_storage, storage_url

    storage = open_storage(storage_url(args.storage), must_exist=True)
    name = args.study or study.only_study(storage, required=True)
    print(report.describe(report.write_report(study.load_pinned(storage, name), args.out)))


def _predict(args: argparse.Namespace) -> int:
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


_STORE = ("storage", "artifacts")
_COMMANDS = (
    _Command(
        "search",
        "run (or continue) a study's search",
        _search,
        ("gpus", *_STORE, "warm_start"),
        _search_arguments,
    ),
    _Command(
        "prepare",
        "decode and cache a study's data on this host ahead of its workers",
        _prepare,
        (),
        _prepare_arguments,
    ),
    _Command(
        "submit",
        "run a study's workers as one Slurm job array (sbatch)",
        _submit,
        ("study", *_STORE, "warm_start"),
        _submit_arguments,
    ),
    _Command(
        "worker",
        "join an existing study from this host (reads everything else from the study)",
        _worker,
        ("study", "device", "gpus", *_STORE),
        _worker_arguments,
    ),
    _Command(
        "status",
        "studies in the storage and their trials",
        _status,
        ("study", "storage"),
        _status_arguments,
    ),
    _Command(
        "export-best",
        "export the best trial's model, tested once on the held-out test split",
        _export_best,
        ("study", "device", *_STORE),
        _export_arguments,
    ),
    _Command(
        "confirm",
        "re-train the top trials with fresh seeds: a real winner or a lucky seed?",
        _confirm,
        ("study", "device", *_STORE),
        _confirm_arguments,
    ),
    _Command(
        "dashboard",
        "browse the studies in optuna-dashboard, checkpoints and figures attached",
        _dashboard,
        _STORE,
        _dashboard_arguments,
    ),
    _Command(
        "report",
        "HTML report, PNG figures and CSV tables of a study's search",
        _report,
        ("study", "storage"),
        _report_arguments,
    ),
    _Command(
        "predict",
        "classify images with an exported model",
        _predict,
        (),
        _predict_arguments,
    ),
)


if __name__ == "__main__":
    sys.exit(main())
