"""Running the real ``tuner`` command, as a user would, and the tiny study it runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TINY_STUDY = """
data: {source: digits, per_class: 20, image_size: 16, augment: flip}
model: {arch: resnet18, weights: none}
train: {epochs: 2, eval_batch_size: 128}
space:
  unfreeze_epoch: {choices: [never, 1]}
  batch_size: {choices: [32, 64]}
search: {study: tiny, trials: 5, keep_checkpoints: 2, resume: false, confirm_top: 0}
"""


def tuner_command(*args: str) -> list[str]:
    """The real CLI, in this interpreter (the venv the tests run in)."""
    return [sys.executable, "-m", "tuner.cli", *args]


def _environment(extra: dict[str, str] | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra or {})}
    for name in ("TUNER_STORAGE", "TUNER_ARTIFACTS"):
        if not extra or name not in extra:
            env.pop(name, None)
    return env


def start_tuner(
    cwd: Path, *args: str, log: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start the real CLI in the background; its output goes to ``cwd/log`` (read it later)."""
    with open(cwd / log, "w") as out:
        return subprocess.Popen(
            tuner_command(*args),
            cwd=cwd,
            env=_environment(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )


def run_tuner(
    cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in its own process, as a user would (``env`` adds variables)."""
    return subprocess.run(
        tuner_command(*args),
        cwd=cwd,
        env=_environment(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
