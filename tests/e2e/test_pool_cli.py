"""A pool of workers serving every queued study, through the real CLI: `tuner search --queue`,
`tuner serve`, `tuner queue`, on real SQLite and PostgreSQL, with real stops.

Every pool worker is a real `tuner` process training real (tiny) models.
"""

from __future__ import annotations

import datetime
import shutil
import signal
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from tests.e2e.test_workers_cli import (
    FINISHED,
    ONE_EPOCH,
    RESUMABLE,
    WATCH,
    sqlite_url,
    wait_for,
)
from tests.e2e.tuner_cli import run_tuner, start_tuner

pytestmark = pytest.mark.slow

IDLE_EXIT = ["--idle-exit", "0.05"]  # 3 seconds without work: the pool is done


def queue_study(folder: Path, name: str, trials: int, *extra: str, url: str = "") -> None:
    storage = ["--storage", url] if url else []
    args = ["search", "tiny.yaml", "--study", name, "--trials", str(trials), "--queue", *storage]
    queued = run_tuner(folder, *args, *extra)
    assert queued.returncode == 0, queued.stderr[-3000:]
    assert f"queued study {name!r}" in queued.stdout and "tuner serve" in queued.stdout


def trials_of(url: str, name: str) -> list[FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def assert_exact_budget(url: str, name: str, budget: int) -> list[FrozenTrial]:
    trials = trials_of(url, name)
    assert len([t for t in trials if t.state in FINISHED]) == budget
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    return trials


def first_start(trials: list[FrozenTrial]) -> datetime.datetime:
    return min(t.datetime_start for t in trials if t.datetime_start is not None)


@pytest.mark.parametrize("storage", ["sqlite", "postgresql"])
def test_a_pool_of_two_serves_two_queued_studies_to_their_exact_budgets(
    tiny_study_file: Path, storage: str, request: pytest.FixtureRequest
) -> None:
    folder = tiny_study_file.parent
    url = (
        sqlite_url(folder)
        if storage == "sqlite"
        else request.getfixturevalue("own_postgres_database")
    )
    queue_study(folder, "low", 3, *ONE_EPOCH, url=url)
    queue_study(folder, "high", 2, "--priority", "1", *ONE_EPOCH, url=url)
    listed = run_tuner(folder, "queue", "--storage", url)
    assert listed.stdout.index("high") < listed.stdout.index("low")  # the order pools serve
    assert "0/2" in listed.stdout and "0/3" in listed.stdout

    served = run_tuner(folder, "serve", "--workers", "2", *IDLE_EXIT, "--storage", url)
    assert served.returncode == 0, (served.stdout + served.stderr)[-3000:]
    low, high = assert_exact_budget(url, "low", 3), assert_exact_budget(url, "high", 2)
    assert first_start(high) < first_start(low)  # the higher priority went first
    workers = {t.user_attrs["worker"]["worker"] for t in low + high if t.state in FINISHED}
    assert len(workers) == 2
    for trial in low + high:  # the log says which worker took which study and trial
        if trial.state in FINISHED:
            who, study = trial.user_attrs["worker"]["worker"], "low" if trial in low else "high"
            assert f"pool worker {who}: study {study!r} trial #{trial.number} started" in (
                served.stdout
            )
    assert served.stdout.count("no queued study has work; exiting") == 2
    listed = run_tuner(folder, "queue", "--storage", url)
    assert "3/3" in listed.stdout and "2/2" in listed.stdout


def test_priority_pause_and_resume(tiny_study_file: Path) -> None:
    """A higher-priority study queued while the pool runs gets the next free worker; a paused
    study starts no trial until resumed; an idle pool exits by itself."""
    folder = tiny_study_file.parent
    url = sqlite_url(folder)
    queue_study(folder, "long", 8, *ONE_EPOCH)
    queue_study(folder, "later", 1, *ONE_EPOCH)
    paused = run_tuner(folder, "queue", "pause", "later")
    assert paused.returncode == 0 and "no new trial starts" in paused.stdout
    pool = start_tuner(folder, "serve", "--idle-exit", "0.2", log="pool.log")
    wait_for("a finished trial", lambda: any(t.state in FINISHED for t in trials_of(url, "long")))
    queue_study(folder, "urgent", 1, "--priority", "5", *ONE_EPOCH)
    queued_at = _queued_at(url, "urgent")
    assert pool.wait(timeout=300) == 0, (folder / "pool.log").read_text()[-3000:]
    log = (folder / "pool.log").read_text()
    assert "no queued study has work; exiting" in log

    long, urgent = assert_exact_budget(url, "long", 8), assert_exact_budget(url, "urgent", 1)
    started_after = [t for t in long if t.datetime_start and t.datetime_start > queued_at]
    assert started_after, "the long study ended before the urgent one was queued"
    assert all(t.datetime_start > urgent[0].datetime_start for t in started_after)
    assert trials_of(url, "later") == [] or all(
        t.state == TrialState.WAITING for t in trials_of(url, "later")
    )  # its enqueued classic recipe waits, never started
    assert "paused" in run_tuner(folder, "queue").stdout

    resumed = run_tuner(folder, "queue", "resume", "later")
    assert resumed.returncode == 0, resumed.stderr
    again = run_tuner(folder, "serve", *IDLE_EXIT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_exact_budget(url, "later", 1)


def _queued_at(url: str, name: str) -> datetime.datetime:
    """When the study was queued, in the local time Optuna stamps trials with."""
    stamp = optuna.load_study(study_name=name, storage=url).user_attrs["tuner:queue"]["queued_at"]
    return datetime.datetime.fromisoformat(stamp).astimezone().replace(tzinfo=None)


def test_cancel_stops_new_trials_and_leaves_none_running(tiny_study_file: Path) -> None:
    folder = tiny_study_file.parent
    url = sqlite_url(folder)
    queue_study(folder, "tiny", 8, "--set", "train.epochs=2")
    pool = start_tuner(folder, "serve", *IDLE_EXIT, log="pool.log")
    wait_for(
        "a running trial",
        lambda: any(t.state == TrialState.RUNNING for t in trials_of(url, "tiny")),
    )
    cancelled = run_tuner(folder, "queue", "cancel", "tiny")
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    assert pool.wait(timeout=300) == 0, (folder / "pool.log").read_text()[-3000:]
    trials = trials_of(url, "tiny")
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert 1 <= len([t for t in trials if t.state in FINISHED]) < 8
    assert "cancelled" in run_tuner(folder, "queue").stdout


def test_sigterm_stops_the_pool_and_a_new_pool_resumes_its_trials(tiny_study_file: Path) -> None:
    folder = tiny_study_file.parent
    url = sqlite_url(folder)
    settings = ["--set", "train.epochs=3", "--set", "search.pruner=none", *RESUMABLE, *WATCH]
    queue_study(folder, "tiny", 4, *settings)
    pool = start_tuner(folder, "serve", "--workers", "2", log="pool.log")
    stopped = wait_for("a checkpointed trial", lambda: _running_with_resume(url))
    pool.send_signal(signal.SIGTERM)
    assert pool.wait(timeout=60) == 130, (folder / "pool.log").read_text()[-3000:]
    trials = trials_of(url, "tiny")
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert trials[stopped.number].state == TrialState.FAIL

    again = run_tuner(folder, "serve", "--workers", "2", *IDLE_EXIT)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    finished = [t for t in assert_exact_budget(url, "tiny", 4) if t.state in FINISHED]
    retry = next(t for t in finished if t.user_attrs["origin_trial"] == stopped.number)
    assert retry.user_attrs["resumed_after_epoch"] >= stopped.user_attrs["resume"]["epoch"]


def _running_with_resume(url: str) -> FrozenTrial | None:
    running = [t for t in trials_of(url, "tiny") if t.state == TrialState.RUNNING]
    return next((t for t in running if "resume" in t.user_attrs), None)


def test_a_study_whose_data_is_missing_is_skipped_once_and_the_other_finishes(
    tiny_study_file: Path,
) -> None:
    folder = tiny_study_file.parent
    url = sqlite_url(folder)
    for label in ("cat", "dog"):
        for i in range(6):
            (folder / "images" / label).mkdir(parents=True, exist_ok=True)
            shutil.copy(_png(folder, i), folder / "images" / label / f"{i}.png")
    queue_study(folder, "pets", 2, "--set", "data.source=folder", "--set", "data.path=images",
                *ONE_EPOCH, "--priority", "3")  # fmt: skip
    queue_study(folder, "digits", 2, *ONE_EPOCH)
    shutil.rmtree(folder / "images")  # this host no longer has the pets study's data

    served = run_tuner(folder, "serve", *IDLE_EXIT)
    assert served.returncode == 0, (served.stdout + served.stderr)[-3000:]
    assert served.stdout.count("skipping study 'pets'") == 1
    assert "cannot load the study's data" in served.stdout and "images" in served.stdout
    assert_exact_budget(url, "digits", 2)
    assert not [t for t in trials_of(url, "pets") if t.state in FINISHED]
    assert "cannot load it" in run_tuner(folder, "queue").stdout


def _png(folder: Path, i: int) -> Path:
    from PIL import Image

    path = folder / f"source-{i}.png"
    if not path.is_file():
        Image.new("RGB", (20, 20), (i * 40, 90, 9)).save(path)
    return path


def test_queue_errors_are_short_and_change_nothing(tiny_study_file: Path) -> None:
    folder = tiny_study_file.parent
    assert run_tuner(folder, "search", "tiny.yaml", "--trials", "1", *ONE_EPOCH).returncode == 0
    for args, words in [
        (["queue", "pause", "tiny"], "is not queued"),
        (["queue", "pause"], "needs the study"),
        (["queue", "set", "tiny"], "at least one of them"),
        (["queue", "resume", "nope"], "not in this storage"),
        (["search", "tiny.yaml", "--priority", "2"], "--priority goes with --queue"),
        (["search", "tiny.yaml", "--queue", "--workers", "2"], "starts no workers here"),
        (["serve", "--idle-exit", "-1"], "--idle-exit"),
    ]:
        failed = run_tuner(folder, *args)
        assert failed.returncode == 2, (args, failed.stdout, failed.stderr)
        assert words in failed.stderr and "Traceback" not in failed.stderr, (args, failed.stderr)
    assert "no queued studies" in run_tuner(folder, "queue").stdout
