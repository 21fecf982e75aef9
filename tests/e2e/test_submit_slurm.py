"""`tuner submit` against a live Slurm cluster (`.ci/slurm.sh start`): real sbatch, real tasks.

Skipped where no cluster answers, except in CI (`TUNER_REQUIRE_SLURM=1`), which starts one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.e2e.tuner_cli import run_tuner
from tuner.search import attrs


def _cluster_up() -> bool:
    if shutil.which("sbatch") is None:
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0


@pytest.fixture(scope="module")
def slurm() -> None:
    if not _cluster_up():
        if os.environ.get("TUNER_REQUIRE_SLURM"):
            pytest.fail("a Slurm cluster is required (TUNER_REQUIRE_SLURM) but sinfo fails")
        pytest.skip("no Slurm cluster here (bash .ci/slurm.sh start starts one)")


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("slurm")]

STUDY = """
data: {{source: digits, per_class: {per_class}, image_size: 16, augment: flip}}
model: {{arch: resnet18, weights: none}}
train: {{epochs: {epochs}, eval_batch_size: 128}}
space:
  freeze_depth: 0
  unfreeze_epoch: never
  batch_size: 32
search: {{study: {name}, trials: {trials}, pruner: none, baselines: false,
         heartbeat_seconds: 2, grace_seconds: 6}}
"""


def _study_file(folder: Path, name: str, **keys: int) -> Path:
    path = folder / "study.yaml"
    path.write_text(STUDY.format(name=name, **{"per_class": 20, "epochs": 2, "trials": 4, **keys}))
    return path


def _squeue(job_id: str) -> list[str]:
    done = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%i %T"], capture_output=True, text=True
    )
    return done.stdout.split("\n") if done.stdout.strip() else []


def _wait_for_array(job_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _squeue(job_id):
        assert time.monotonic() < deadline, f"job array {job_id} still queued: {_squeue(job_id)}"
        time.sleep(1)


def _job_id(stdout: str) -> str:
    line = next(line for line in stdout.splitlines() if line.startswith("submitted job array"))
    return line.split()[3].rstrip(":")


def test_dry_run_prints_a_batch_script_slurm_accepts(tmp_path: Path) -> None:
    study = _study_file(tmp_path, "dry")
    result = run_tuner(
        tmp_path, "submit", str(study), "--workers", "3", "--cpus-per-worker", "1",
        "--time", "00:10:00", "--mem", "500M", "--sbatch-arg=--comment=tuner-test", "--dry-run",
        env={"TUNER_STORAGE": "postgresql+psycopg://tuner:s3cret@db.example/tuner"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    script = result.stdout
    assert script.startswith("#!/bin/bash\n") and "s3cret" not in script
    for line in ("--array=0-2", "--requeue", "--signal=B:TERM@120", "--time=00:10:00",
                 "--mem=500M", "--comment=tuner-test", "--cpus-per-task=1"):  # fmt: skip
        assert f"#SBATCH {line}" in script
    assert "--worker-index $SLURM_ARRAY_TASK_ID" in script
    assert f"--output={tmp_path}/tuner-logs/dry/slurm/%x-%A_%a.log" in script
    assert not (tmp_path / "tuner.db").exists()  # a dry run creates nothing
    (tmp_path / "job.sbatch").write_text(script)
    assert subprocess.run(["bash", "-n", tmp_path / "job.sbatch"]).returncode == 0
    checked = subprocess.run(
        ["sbatch", "--test-only", str(tmp_path / "job.sbatch")], capture_output=True, text=True
    )
    assert checked.returncode == 0 and "to start at" in checked.stderr, checked.stderr


def test_refusals_come_before_anything_is_submitted(tmp_path: Path) -> None:
    study = _study_file(tmp_path, "refused")
    base = ("submit", str(study), "--workers", "2")
    unknown = run_tuner(tmp_path, *base, "--partition", "nosuch")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert "--partition: partition 'nosuch' does not exist" in unknown.stderr
    assert "debug" in unknown.stderr and "multi" in unknown.stderr
    sqlite = run_tuner(tmp_path, *base, "--partition", "multi")
    assert sqlite.returncode == 2 and "--storage: SQLite" in sqlite.stderr
    assert "partition of 2 nodes" in sqlite.stderr and "PostgreSQL" in sqlite.stderr
    local = run_tuner(
        tmp_path, *base, "--partition", "multi", "--dry-run",
        "--storage", "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    )  # fmt: skip
    assert local.returncode == 0 and "warning: --artifacts" in local.stderr
    assert "local" in local.stderr and "shared mount" in local.stderr
    no_sbatch = run_tuner(tmp_path, *base, env={"PATH": os.path.dirname(os.sys.executable)})
    assert no_sbatch.returncode == 2 and "sbatch: not found on PATH" in no_sbatch.stderr
    assert not (tmp_path / "tuner.db").exists() and not (tmp_path / "tuner-logs").exists()


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))


def test_a_two_task_array_reaches_the_budget_on_postgres(
    tmp_path: Path, postgres_url: str, postgres_study: str
) -> None:
    study_file = _study_file(tmp_path, postgres_study, trials=4)
    started = time.monotonic()
    result = run_tuner(
        tmp_path, "submit", str(study_file), "--workers", "2", "--storage", postgres_url
    )
    assert result.returncode == 0, result.stderr[-2000:]
    job_id = _job_id(result.stdout)
    assert f"squeue -j {job_id}" in result.stdout and "tuner status" in result.stdout
    _wait_for_array(job_id, timeout=300)
    study = optuna.load_study(study_name=postgres_study, storage=postgres_url)
    trials = study.get_trials()
    assert len(_finished(study)) == 4  # exactly the budget, whatever the tasks
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    workers = {t.user_attrs[attrs.WORKER]["worker"] for t in _finished(study)}
    assert len(workers) == 2, workers  # both tasks ran trials, each as its own worker index
    logs = sorted((tmp_path / "tuner-logs" / postgres_study / "slurm").glob("*.log"))
    assert len(logs) == 2 and all("worker done" in log.read_text() for log in logs)
    print(f"submit to array end: {time.monotonic() - started:.1f} s")


def test_a_cancelled_task_leaves_its_trial_to_be_resumed(
    tmp_path: Path, postgres_url: str, postgres_study: str
) -> None:
    study_file = _study_file(tmp_path, postgres_study, trials=3, epochs=6, per_class=60)
    result = run_tuner(
        tmp_path, "submit", str(study_file), "--workers", "2", "--storage", postgres_url
    )
    assert result.returncode == 0, result.stderr[-2000:]
    job_id = _job_id(result.stdout)
    study = optuna.load_study(study_name=postgres_study, storage=postgres_url)
    deadline = time.monotonic() + 240
    victim = None
    while victim is None:
        assert time.monotonic() < deadline, "no trial reached a resume checkpoint"
        for trial in study.get_trials(states=(TrialState.RUNNING,)):
            if attrs.RESUME in trial.user_attrs:  # it has finished an epoch: cancel it now
                victim = trial
                break
        time.sleep(0.3)
    task = victim.user_attrs[attrs.WORKER]["worker"].split("/")[-1]
    subprocess.run(["scancel", f"{job_id}_{task}"], check=True)
    _wait_for_array(job_id, timeout=300)
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    cancelled = study.get_trials()[victim.number]
    assert cancelled.state == TrialState.FAIL
    origin = victim.user_attrs.get(attrs.ORIGIN, victim.number)
    chain = [t for t in trials if t.user_attrs.get(attrs.ORIGIN) == origin]
    finished = [t for t in chain if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 1, [(t.number, t.state) for t in chain]  # counted once
    assert finished[0].user_attrs.get(attrs.RESUMED_AFTER_EPOCH, -1) >= 0  # not from scratch
    assert len(_finished(study)) == 3


def test_a_pool_array_serves_two_queued_studies(tmp_path: Path, own_postgres_database: str) -> None:
    """`tuner submit --pool`: each task a `tuner serve` worker; two studies queued, one of them
    by the submit itself, both reach their budgets and the idle tasks end by themselves."""
    url = own_postgres_database
    queued = run_tuner(
        tmp_path, "search", str(_study_file(tmp_path, "first", trials=2)), "--queue",
        "--storage", url,
    )  # fmt: skip
    assert queued.returncode == 0, queued.stderr[-2000:]
    dry = run_tuner(tmp_path, "submit", "--pool", "--workers", "2", "--idle-exit", "0.1",
                    "--storage", url, "--dry-run")  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert " serve --idle-exit 0.1 --worker-index $SLURM_ARRAY_TASK_ID" in dry.stdout
    assert "#SBATCH --job-name=tuner-pool" in dry.stdout and "#SBATCH --requeue" in dry.stdout
    assert "postgresql" not in dry.stdout  # the URL travels in the environment only

    result = run_tuner(
        tmp_path, "submit", str(_study_file(tmp_path, "second", trials=3)), "--pool",
        "--priority", "2", "--workers", "2", "--idle-exit", "0.1", "--storage", url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "queued study 'second' at priority 2" in result.stdout and "tuner queue" in result.stdout
    job_id = _job_id(result.stdout)
    _wait_for_array(job_id, timeout=300)
    for name, budget in (("first", 2), ("second", 3)):
        study = optuna.load_study(study_name=name, storage=url)
        assert len(_finished(study)) == budget
        assert not study.get_trials(states=(TrialState.RUNNING,))
    logs = sorted((tmp_path / "tuner-logs" / "pool" / "slurm").glob("*.log"))
    assert len(logs) == 2 and all("no queued study has work" in log.read_text() for log in logs)
