"""The command line's shape: a handler per command, shared options once, no torch for --help."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from tuner import cli

COMMANDS = (
    "search",
    "prepare",
    "config",
    "submit",
    "worker",
    "serve",
    "queue",
    "status",
    "export-best",
    "confirm",
    "dashboard",
    "report",
    "predict",
)


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli._parser()
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(commands.choices)


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in parser._actions if flag in a.option_strings), None)


def _tuner(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m tuner``, with ``env`` added to this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "tuner", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_every_command_has_its_own_handler() -> None:
    subparsers = _subparsers()
    assert tuple(subparsers) == COMMANDS
    handlers = [p.get_default("handler") for p in subparsers.values()]
    assert all(callable(h) for h in handlers) and len(set(handlers)) == len(COMMANDS)


@pytest.mark.parametrize(
    ("flag", "commands"),
    [
        (
            "--storage",
            {
                "search",
                "submit",
                "worker",
                "serve",
                "queue",
                "status",
                "export-best",
                "confirm",
                "dashboard",
            },
        ),
        (
            "--artifacts",
            {"search", "submit", "worker", "serve", "export-best", "confirm", "dashboard"},
        ),
        ("--gpus", {"search", "worker", "serve"}),
        ("--per-gpu", {"search", "worker", "serve"}),
        ("--device", {"worker", "serve", "confirm"}),
        ("--study", {"submit", "worker", "status", "export-best", "confirm", "report"}),
    ],
)
def test_shared_options_are_one_definition(flag: str, commands: set[str]) -> None:
    """The commands share the parent parser's action: one help text, one default."""
    actions = {name: _option(p, flag) for name, p in _subparsers().items()}
    shared = [actions[name] for name in commands]
    assert None not in shared and len({id(a) for a in shared}) == 1
    others = {name for name, a in actions.items() if a is not None and a is not shared[0]}
    assert others <= {"search"}  # search names a new study itself: its --study differs


def test_options_keep_their_defaults() -> None:
    args = cli._parser().parse_args(["worker", "--gpus", "0,1"])
    assert (args.per_gpu, args.study, args.storage, args.handler) == (
        1,
        None,
        None,
        cli.commands.worker_command,
    )
    args = cli._parser().parse_args(["confirm"])
    assert (args.top, args.seeds, args.device, args.command) == (3, 3, None, "confirm")


def test_building_the_parser_imports_no_torch() -> None:
    code = (
        "import sys, tuner.cli; tuner.cli._parser().parse_args(['status']); "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_config_show_of_a_file_loads_no_torch_nor_optuna() -> None:
    """Reading a config is instant: it needs neither, only the config package."""
    code = (
        "import contextlib, io, sys, tuner.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    tuner.cli.main(['config', 'show', '--set', 'train.epochs=3'])\n"
        "print('epochs: 3' in out.getvalue(), {'torch', 'optuna'} & set(sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "True set()", result.stderr


def test_version_and_python_dash_m() -> None:
    shown = _tuner("--version")
    assert (shown.returncode, shown.stdout) == (0, f"tuner {version('tuner')}\n")
    helped = _tuner("--help")
    assert helped.returncode == 0 and "export-best" in helped.stdout
    assert all(command in helped.stdout for command in COMMANDS)


def test_a_bad_progress_interval_fails_before_any_work(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'x.db'}"
    result = _tuner("search", "--storage", storage, TUNER_PROGRESS_SECONDS="soon")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "tuner search: error: TUNER_PROGRESS_SECONDS='soon'" in result.stderr
    assert not (tmp_path / "x.db").exists()
