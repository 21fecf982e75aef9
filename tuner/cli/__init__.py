"""The ``tuner`` command line: parses, prints, exits. The work happens in the layers below.

``arguments`` declares each command's options, ``commands`` holds one handler per command;
this module ties them into one parser and turns errors into exit codes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version

from tuner.cli import arguments, commands
from tuner.cli.commands import EXIT_USER_ERROR
from tuner.errors import DeviceFailedError, TunerError

EXIT_INTERRUPTED = 130
EXIT_DEVICE_FAILED = 3  # the GPU broke: a launcher or Slurm replaces the worker (not deliberate)


@dataclass(frozen=True)
class _Command:
    """One subcommand: its parser's shared and own options, and the handler that runs it."""

    name: str
    help: str
    handler: Callable[[argparse.Namespace], int | None]
    shared: tuple[str, ...]  # keys of arguments.shared_options(), in the order --help shows them
    add_arguments: Callable[[argparse.ArgumentParser], None]  # the command's own options


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tuner",
        description="Search how best to fine-tune a pretrained ResNet on your images (Optuna).",
    )
    parser.add_argument("--version", action="version", version=f"tuner {version('tuner')}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = arguments.shared_options()
    for command in _COMMANDS:
        parents = [shared[name] for name in command.shared]
        sub = subparsers.add_parser(command.name, help=command.help, parents=parents)
        command.add_arguments(sub)
        sub.set_defaults(handler=command.handler)
    return parser


_KEPT_WHEN_INTERRUPTED = {
    "search": "Finished trials are kept in the study. ",
    "worker": "Finished trials are kept in the study. ",
    "serve": "Finished trials are kept; interrupted ones resume from their last epoch. ",
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
    except DeviceFailedError as exc:
        print(f"tuner {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_DEVICE_FAILED
    except KeyboardInterrupt:
        kept = _KEPT_WHEN_INTERRUPTED.get(args.command, "")
        print(
            f"\ntuner {args.command}: interrupted. {kept}Run the same command again to "
            "finish the rest.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return status or 0


_STORE = ("storage", "artifacts")
_COMMANDS = (
    _Command(
        "search",
        "run (or continue) a study's search",
        commands.search_command,
        ("gpus", *_STORE, "warm_start"),
        arguments.search_arguments,
    ),
    _Command(
        "prepare",
        "decode and cache a study's data on this host ahead of its workers",
        commands.prepare_command,
        (),
        arguments.prepare_arguments,
    ),
    _Command(
        "config",
        "show the full resolved config of a study YAML, the built-in default or a stored study",
        commands.config_command,
        (),
        arguments.config_arguments,
    ),
    _Command(
        "submit",
        "run a study's workers as one Slurm job array (sbatch)",
        commands.submit_command,
        ("study", *_STORE, "warm_start"),
        arguments.submit_arguments,
    ),
    _Command(
        "worker",
        "join an existing study from this host (reads everything else from the study)",
        commands.worker_command,
        ("study", "device", "gpus", *_STORE),
        arguments.worker_arguments,
    ),
    _Command(
        "serve",
        "a pool of workers on this host serving every queued study (tuner search --queue)",
        commands.serve_command,
        ("device", "gpus", *_STORE),
        arguments.serve_arguments,
    ),
    _Command(
        "queue",
        "list the queued studies; pause, resume, cancel or re-prioritise one",
        commands.queue_command,
        ("storage",),
        arguments.queue_arguments,
    ),
    _Command(
        "status",
        "studies in the storage and their trials",
        commands.status_command,
        ("study", "storage"),
        arguments.status_arguments,
    ),
    _Command(
        "export-best",
        "export the best trial's model, tested once on the held-out test split",
        commands.export_best_command,
        ("study", "device", *_STORE),
        arguments.export_arguments,
    ),
    _Command(
        "confirm",
        "re-train the top trials with fresh seeds: a real winner or a lucky seed?",
        commands.confirm_command,
        ("study", "device", *_STORE),
        arguments.confirm_arguments,
    ),
    _Command(
        "dashboard",
        "browse the studies in optuna-dashboard, checkpoints and figures attached",
        commands.dashboard_command,
        _STORE,
        arguments.dashboard_arguments,
    ),
    _Command(
        "report",
        "HTML report, PNG figures and CSV tables of a study's search",
        commands.report_command,
        ("study", "storage"),
        arguments.report_arguments,
    ),
    _Command(
        "predict",
        "classify images with an exported model",
        commands.predict_command,
        (),
        arguments.predict_arguments,
    ),
)
