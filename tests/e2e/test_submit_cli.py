"""`tuner submit` where no Slurm answers: a dry run still prints its script, a submit refuses.

The commands run with a PATH that holds only this interpreter's folder, so no Slurm client
(sinfo, sbatch) is found, as on a laptop where a user reads the script before copying it to
the cluster. The live-cluster tests are in test_submit_slurm.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.tuner_cli import run_tuner

pytestmark = pytest.mark.slow

NO_SLURM = {"PATH": os.path.dirname(sys.executable)}


def test_a_dry_run_prints_its_script_and_says_what_it_left_unchecked(
    tmp_path: Path, tiny_study_file: Path
) -> None:
    result = run_tuner(
        tmp_path, "submit", str(tiny_study_file), "--workers", "3", "--partition", "gpu",
        "--dry-run", env=NO_SLURM,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    script = result.stdout
    assert script.startswith("#!/bin/bash\n")
    for line in ("--array=0-2", "--partition=gpu", "--requeue", "--job-name=tuner-tiny"):
        assert f"#SBATCH {line}" in script
    (note,) = result.stderr.strip().splitlines()
    assert note.startswith("note: Slurm could not be asked (sinfo: not found on PATH")
    assert "did not check the partition" in note and "without --dry-run checks them" in note
    (tmp_path / "job.sbatch").write_text(script)
    assert subprocess.run(["bash", "-n", tmp_path / "job.sbatch"]).returncode == 0
    assert not (tmp_path / "tuner.db").exists() and not (tmp_path / "tuner-logs").exists()


def test_a_real_submit_without_slurm_refuses_before_creating_anything(
    tmp_path: Path, tiny_study_file: Path
) -> None:
    result = run_tuner(tmp_path, "submit", str(tiny_study_file), "--workers", "2", env=NO_SLURM)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "sbatch: not found on PATH" in result.stderr
    assert not (tmp_path / "tuner.db").exists() and not (tmp_path / "tuner-logs").exists()
