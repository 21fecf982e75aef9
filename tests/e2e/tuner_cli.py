"""Running the real ``tuner`` command, as a user would, and the tiny study it runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TINY_STUDY = """
data: {source: digits, per_class: 40, image_size: 16, augment: flip}
model: {arch: resnet18, weights: none}
train: {epochs: 2, eval_batch_size: 128}
space:
  unfreeze_epoch: {choices: [never, 1]}
  batch_size: {choices: [32, 64]}
search: {study: tiny, trials: 5, keep_checkpoints: 2}
"""


def tuner_command(*args: str) -> list[str]:
    """The real CLI, in this interpreter (the venv the tests run in)."""
    return [sys.executable, "-m", "tuner.cli", *args]


def run_tuner(
    cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in its own process, as a user would (``env`` adds variables)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    env.pop("TUNER_STORAGE", None)
    env.pop("TUNER_ARTIFACTS", None)
    return subprocess.run(
        tuner_command(*args),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
