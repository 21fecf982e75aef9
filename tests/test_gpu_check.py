"""bench/gpu_check.sh cannot pass by accident: what of it runs without a GPU.

Without CUDA the check stops at once with one line. Its limits fit its 8 minutes. The wheels it
carries cover what it imports. Each judge (the study's, the out-of-memory trial's, the CUDA
tests', the throughput goals') fails on what it must fail on, on real SQLite studies made
here with Optuna's API; the sync check's paths train on the CPU.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
GPU_ENV = {"python_version": "3.12", "platform_machine": "x86_64", "sys_platform": "linux"}


def bench_module(name: str) -> ModuleType:
    """``bench/NAME.py`` imported as a bench script imports its siblings: by their names."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


# --- the check itself ---------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="would run the whole GPU check")
def test_without_cuda_the_check_fails_at_once_with_one_line() -> None:
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_PROBE_SECONDS": "300"}
    done = subprocess.run(
        ["bash", str(BENCH / "gpu_check.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
    )
    output = (done.stdout + done.stderr).strip()
    assert done.returncode != 0
    assert len(output.splitlines()) == 1, output
    assert "no CUDA device" in output and output.startswith("gpu_check: "), output
    assert "Traceback" not in output


def test_the_limits_fit_eight_minutes() -> None:
    text = (BENCH / "gpu_check.sh").read_text()
    limits = {
        name: int(value)
        for name, value in re.findall(r"^(LIMIT_\w+)=(?:\$\{\w+:-)?(\d+)\}?$", text, re.M)
    }
    grace = int(re.search(r"^GRACE=(\d+)", text, re.M).group(1))
    assert {"LIMIT_PROBE", "LIMIT_WHEELS", "LIMIT_BENCH", "LIMIT_OOM"} <= limits.keys()
    assert sum(limits.values()) <= 480, limits
    assert all(limit > grace for limit in limits.values())
    used = set(re.findall(r"\$\{?(LIMIT_\w+)", text))
    assert used == limits.keys()  # each one bounds a command and is counted in the budget


def test_the_wheels_cover_what_the_check_imports() -> None:
    """plotly is fetched (tuner.results imports it); every dependency of tuner is in the image
    or fetched, and so is every need of every fetched wheel (as this environment's versions
    state them, on the GPU machine's Python 3.12 on x86-64 Linux)."""
    done = subprocess.run(
        ["bash", str(BENCH / "gpu_wheels.sh"), "--list"], capture_output=True, text=True
    )
    lists = [set(map(canonicalize_name, line.split())) for line in done.stdout.splitlines()]
    image, fetch, not_needed = lists
    assert "plotly" in fetch and "pytest" in image
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    direct = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    assert direct - image - fetch - not_needed == set()
    missing = {}
    for name in fetch:
        for text in importlib.metadata.requires(name) or []:
            needed = Requirement(text)
            applies = needed.marker is None or needed.marker.evaluate({**GPU_ENV, "extra": ""})
            if applies and canonicalize_name(needed.name) not in image | fetch:
                missing[name] = needed.name
    assert not missing


# --- the study's judge --------------------------------------------------------------------

WORKER_A = {"host": "gpu", "pid": 11, "pid_namespace": "ns", "device": "cuda (GPU 0)"}
WORKER_B = {**WORKER_A, "pid": 12}


def finished(state: TrialState, worker: dict | None = WORKER_A, **user_attrs) -> object:
    attrs = {**user_attrs, **({"worker": worker} if worker else {})}
    value = 0.5 if state == TrialState.COMPLETE else None
    return create_trial(state=state, value=value, user_attrs=attrs)


def sqlite_study(tmp_path: Path, trials: list, running: int = 0) -> str:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="check", storage=url, direction="maximize")
    for trial in trials:
        study.add_trial(trial)
    for _ in range(running):
        study.ask().set_user_attr("worker", WORKER_A)
    return url


def judge(url: str, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    code = bench_module("gpu_study_check").main([url, *args])
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1, out
    return code, out


def test_a_study_that_ran_its_budget_on_cuda_passes(tmp_path: Path, capsys) -> None:
    peak = "cuda_peak_reserved_bytes"
    url = sqlite_study(
        tmp_path,
        [
            finished(TrialState.COMPLETE, **{peak: 1_000_000_000}),
            finished(TrialState.PRUNED, WORKER_B, **{peak: 900_000_000}),
            finished(TrialState.COMPLETE, **{peak: 1_040_000_000}),
        ],
    )
    code, out = judge(url, capsys, "--trials", "3", "--workers", "2", "--device-has", "(GPU 0)")
    assert code == 0 and out.startswith("passed: ") and "+4%" in out, out


def test_without_recorded_peaks_memory_is_said_to_be_unmeasured(tmp_path: Path, capsys) -> None:
    url = sqlite_study(tmp_path, [finished(TrialState.COMPLETE)])
    code, out = judge(url, capsys, "--trials", "1")
    assert code == 0 and "NOT MEASURED" in out, out


@pytest.mark.parametrize(
    ("trials", "running", "args", "reason"),
    [
        ([finished(TrialState.FAIL, fail_reason="OutOfMemoryError: x")], 0, (), "FAIL trial"),
        ([], 1, (), "RUNNING"),
        ([finished(TrialState.COMPLETE)], 0, (), "1 finished trials"),
        ([finished(TrialState.COMPLETE, {**WORKER_A, "device": "cpu"})] * 2, 0, (), "'cpu'"),
        ([finished(TrialState.COMPLETE, None)] * 2, 0, (), "no 'worker' attribute"),
        ([finished(TrialState.COMPLETE)] * 2, 0, ("--workers", "2"), "1 worker process"),
        ([finished(TrialState.COMPLETE)] * 2, 0, ("--device-has", "(GPU 1)"), "(GPU 1)"),
        (
            [finished(TrialState.COMPLETE, cuda_peak_reserved_bytes=v) for v in (100, 106)],
            0,
            (),
            "grew 6%",
        ),
    ],
    ids=["fail", "running", "too-few", "cpu", "no-worker", "one-worker", "other-gpu", "growth"],
)
def test_a_study_that_must_not_pass_fails_with_its_reason(
    tmp_path: Path, capsys, trials: list, running: int, args: tuple, reason: str
) -> None:
    url = sqlite_study(tmp_path, trials, running)
    code, out = judge(url, capsys, "--trials", "2", *args)
    assert code == 1 and out.startswith("FAILED: ") and reason in out, out


def test_the_judge_as_a_command_prints_one_line(tmp_path: Path) -> None:
    url = sqlite_study(tmp_path, [finished(TrialState.FAIL, fail_reason="CUDA out of memory")])
    done = subprocess.run(
        [sys.executable, str(BENCH / "gpu_study_check.py"), url, "--trials", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert done.stdout.strip() == "FAILED: 1 FAIL trial(s): #0; #0: CUDA out of memory"
    assert "Traceback" not in done.stderr


def test_a_missing_database_is_not_created(tmp_path: Path, capsys) -> None:
    code, out = judge(str(tmp_path / "none.db"), capsys, "--trials", "1")
    assert code == 1 and "no study database" in out and not (tmp_path / "none.db").exists()


# --- the out-of-memory trial's judge ------------------------------------------------------

BATCH = CategoricalDistribution([4, 100])


def batch_trial(state: TrialState, batch: int, pid: int, reason: str = "") -> object:
    worker = {**WORKER_A, "pid": pid}
    attrs = {"worker": worker, **({"fail_reason": reason} if reason else {})}
    value = 0.5 if state == TrialState.COMPLETE else None
    return create_trial(
        state=state,
        value=value,
        params={"batch_size": batch},
        distributions={"batch_size": BATCH},
        user_attrs=attrs,
    )


@pytest.mark.parametrize(
    ("trials", "reason"),
    [
        (
            [
                batch_trial(TrialState.FAIL, 100, 7, "out of memory: resnet50, batch size 100"),
                batch_trial(TrialState.COMPLETE, 4, 7),
            ],
            None,
        ),
        (
            [batch_trial(TrialState.COMPLETE, 100, 7), batch_trial(TrialState.COMPLETE, 4, 7)],
            "not FAIL for out of memory",
        ),
        (
            [
                batch_trial(TrialState.FAIL, 100, 7, "ValueError: x"),
                batch_trial(TrialState.COMPLETE, 4, 7),
            ],
            "not FAIL for out of memory",
        ),
        (
            [
                batch_trial(TrialState.FAIL, 100, 7, "CUDA out of memory"),
                batch_trial(TrialState.COMPLETE, 4, 8),
            ],
            "did not survive",
        ),
        (
            [batch_trial(TrialState.FAIL, 100, 7, "CUDA out of memory")],
            "expected one trial of batch 4",
        ),
        ([batch_trial(TrialState.COMPLETE, 100, 7)], "is COMPLETE, not FAIL"),
    ],
    ids=["survives", "no-oom", "other-failure", "new-worker", "no-second-trial", "fitted"],
)
def test_the_out_of_memory_judge(tmp_path: Path, trials: list, reason: str | None) -> None:
    study = optuna.load_study(study_name="check", storage=sqlite_study(tmp_path, trials))
    search = bench_module("gpu_search_check")
    if reason is None:
        assert "COMPLETE in the same worker, pid 7" in search.judge_oom(study)
    else:
        with pytest.raises(search.Failed, match=reason):
            search.judge_oom(study)


# --- the CUDA tests' and the throughput goals' judges --------------------------------------


def test_the_cuda_tests_are_found_and_a_skip_fails() -> None:
    gpu_tests = bench_module("gpu_tests")
    files = gpu_tests.cuda_test_files(REPO / "tests")
    assert REPO / "tests" / "engine" / "test_cuda.py" in files
    outcomes = gpu_tests._Outcomes()
    outcomes.passed, outcomes.skipped = ["a"], ["b"]
    assert gpu_tests.verdict(0, outcomes, files)[0] is False  # pytest says 0 for skips
    outcomes.skipped = []
    assert gpu_tests.verdict(0, outcomes, files)[0] is True
    assert gpu_tests.verdict(0, gpu_tests._Outcomes(), files)[0] is False  # nothing ran


@pytest.mark.parametrize(
    ("resident224", "streamed32", "passed"),
    [(7000, 9000, True), (6900, 9000, False), (7000, 8400, False)],
)
def test_the_throughput_goals_are_enforced(
    resident224: float, streamed32: float, passed: bool
) -> None:
    epochs = {(32, "resident"): 10_000, (32, "streamed"): streamed32}
    epochs |= {(224, "resident"): resident224, (224, "streamed"): resident224}
    ok, lines = bench_module("gpu_bench").judge(10_000, epochs)
    assert ok is passed
    assert lines[-1].startswith("passed: " if passed else "FAILED: ")


# --- the sync check's paths, on the CPU ---------------------------------------------------


def test_the_sync_check_paths_train_and_the_cached_one_uses_the_cache(capsys) -> None:
    sync = bench_module("gpu_sync_check")
    code = sync.main(["--device", "cpu", "--paths", "cached features", "cutmix"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "cached features: passed" in out and "cutmix: passed" in out
