"""The ``tuner`` command line: parses, prints, exits. The work happens in the modules below."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tuner.errors import TunerError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tuner",
        description="Search how best to fine-tune a pretrained ResNet on your images (Optuna).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    search = commands.add_parser("search", help="run (or continue) a study's search")
    search.add_argument("config", nargs="?", type=Path, help="study YAML (default: built-in)")
    search.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set data.path=/data/pets",
    )
    search.add_argument("--trials", type=int, help="finished trials the study should end with")
    search.add_argument("--study", help="study name (default: search.study, or the file name)")
    _add_store_options(search)

    status = commands.add_parser("status", help="studies in the storage and their trials")
    status.add_argument("--study", help="show this study (default: the only one)")
    status.add_argument("--csv", type=Path, help="also write the trials table to this CSV file")
    _add_store_options(status, artifacts=False)

    export = commands.add_parser("export-best", help="export the best trial's model")
    export.add_argument("--study", help="study name (default: the only one in the storage)")
    export.add_argument("--trial", type=int, help="export this trial number instead of the best")
    export.add_argument("--out", type=Path, default=Path("best"), help="output folder (best/)")
    export.add_argument("--force", action="store_true", help="replace an existing output folder")
    export.add_argument(
        "--format",
        default="safetensors",
        help="comma-separated: safetensors (always written), torchscript, onnx "
        "(needs the onnx extra); default safetensors",
    )
    _add_store_options(export)

    predict = commands.add_parser("predict", help="classify images with an exported model")
    predict.add_argument(
        "model_dir", type=Path, metavar="MODEL_DIR", help="folder written by export-best"
    )
    predict.add_argument(
        "images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files; folders are walked"
    )
    predict.add_argument("--top-k", type=int, default=3, help="classes shown per image (3)")
    predict.add_argument("--json", action="store_true", help="one JSON object per line and image")
    return parser


def _add_store_options(parser: argparse.ArgumentParser, artifacts: bool = True) -> None:
    parser.add_argument(
        "--storage",
        help="study storage URL (default: $TUNER_STORAGE or "
        "sqlite:///tuner.db in the current directory)",
    )
    if artifacts:
        parser.add_argument(
            "--artifacts",
            help="checkpoint folder (default: $TUNER_ARTIFACTS "
            "or tuner-artifacts/ in the current directory)",
        )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {
        "search": _search,
        "status": _status,
        "export-best": _export_best,
        "predict": _predict,
    }
    try:
        status = handlers[args.command](args)
    except TunerError as exc:
        print(f"tuner {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(
            f"\ntuner {args.command}: interrupted. Finished trials are kept in the study; "
            "run the same command again to finish the rest.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return status or 0


def _search(args: argparse.Namespace) -> None:
    import optuna

    from tuner import reporting, search, signals

    # tuner reports through its progress bar and summary (failed trials' reasons included);
    # Optuna's log lines and per-trial tracebacks would break the bar.
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    request = search.SearchRequest(
        args.config, tuple(args.set), args.study, args.trials, args.storage, args.artifacts
    )
    started = time.monotonic()
    signals.stop_on_signals()
    session = search.prepare(request, print)
    outcome = search.run(session)
    print(reporting.search_summary(session, outcome, time.monotonic() - started))


def _status(args: argparse.Namespace) -> None:
    from tuner import reporting, study

    storage = study.open_storage(study.storage_url(args.storage), must_exist=True)
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
    from tuner import export, study

    storage = study.open_storage(study.storage_url(args.storage), must_exist=True)
    name = args.study or study.only_study(storage, required=True)
    pinned = study.load_pinned(storage, name)
    store = study.artifact_store(study.artifacts_path(args.artifacts), must_exist=True)
    result = export.export_trial(
        pinned,
        store,
        args.out,
        trial_number=args.trial,
        force=args.force,
        formats=args.format.split(","),
    )
    print(export.describe(result))


def _predict(args: argparse.Namespace) -> int:
    from tuner import predict

    outcome = predict.predict(args.model_dir, args.images, top_k=args.top_k)
    if args.json:
        if outcome.predictions:
            print(predict.format_json_lines(outcome))
    else:
        print(predict.format_table(outcome))
    for path, why in outcome.bad_files:
        print(f"tuner predict: skipped {path}: {why}", file=sys.stderr)
    return EXIT_USER_ERROR if outcome.bad_files else 0


if __name__ == "__main__":
    sys.exit(main())
