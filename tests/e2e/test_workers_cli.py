"""Parallel and distributed workers through the real CLI: SQLite and PostgreSQL, crashes, stops.

Every worker here is a real `tuner` process training real (tiny) models; kills are real
SIGKILLs and the database restart is a real PostgreSQL restart.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState
from PIL import Image

from tests.e2e.tuner_cli import run_tuner, start_tuner
from tests.helpers import save_image

pytestmark = pytest.mark.slow

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# quick heartbeats so that a dead worker's trial is noticed within seconds
WATCH = ["--set", "search.heartbeat_seconds=1", "--set", "search.grace_seconds=3"]
# the tiny study skips per-epoch resume checkpoints to save time; the crash tests need them
RESUMABLE = ["--set", "search.resume=true"]
# one epoch per trial where only the sharing of the study is tested
ONE_EPOCH = ["--set", "train.epochs=1", "--set", "space.unfreeze_epoch=never", "--set",
             "space.warmup_epochs=0"]  # fmt: skip


def load(url: str, name: str = "tiny") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def sqlite_url(folder: Path) -> str:
    return f"sqlite:///{folder / 'tuner.db'}"


def wait_for(what: str, check: Callable[[], object], timeout: float = 240) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with_value = check()
        if with_value:
            return with_value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def logs(folder: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(folder.rglob("*.log")))


def assert_parallel_search(study: optuna.Study, budget: int, workers: int) -> None:
    """Exactly the budget finished, nothing is left running, every trial says
    which of the workers ran it, the trials were shared, and the workers did not draw the
    same configuration twice.

    Not every worker need run a trial: on 2 busy cores one can finish importing torch after
    the others have used up a small budget, and then it rightly stops at once. Of two trials
    claimed at once the later goes back to the queue untouched (WAITING, never run), and may
    still be there when the budget is met.
    """
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == budget, [(t.number, t.state.name) for t in trials]
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert all(not t.params for t in trials if t.state == TrialState.WAITING)
    trials = [t for t in trials if t.state != TrialState.WAITING]
    names = {t.user_attrs["worker"]["worker"] for t in trials}
    assert names <= {f"{trials[0].user_attrs['worker']['host']}/{i}" for i in range(workers)}
    assert len(names) >= 2, f"one worker ran every trial: {names}"
    assert all({"host", "pid", "device"} <= t.user_attrs["worker"].keys() for t in trials)
    first = [json.dumps(t.params, sort_keys=True) for t in sorted(trials, key=lambda t: t.number)]
    assert len(set(first[:12])) == len(first[:12]), "two trials drew identical parameters"


def test_three_workers_share_one_sqlite_file_and_finish_exactly_the_budget(
    tiny_study_file: Path,
) -> None:
    folder = tiny_study_file.parent
    result = run_tuner(folder, "search", "tiny.yaml", "--workers", "3", "--trials", "6", *ONE_EPOCH)
    output = result.stdout + result.stderr + logs(folder)
    assert result.returncode == 0, output[-3000:]
    assert "database is locked" not in output
    assert "starting 3 workers" in result.stdout
    assert "workers: " in result.stdout  # the summary says which worker ran how many trials
    assert "study tiny: " in result.stdout and "trials finished" in result.stdout
    assert_parallel_search(load(sqlite_url(folder)), budget=6, workers=3)
    assert "study tiny: 6 of 6 trials finished" in result.stdout


def test_four_workers_on_postgresql_with_a_secret_in_the_url(
    tiny_study_file: Path, postgres_url: str, postgres_study: str
) -> None:
    """Trust auth ignores the password, so it can be a secret that must show up nowhere."""
    folder = tiny_study_file.parent
    secret_url = postgres_url.replace("postgres@", "postgres:Sup3rS3cret@")
    result = run_tuner(
        folder,
        "search",
        "tiny.yaml",
        "--study",
        postgres_study,
        "--storage",
        secret_url,
        "--workers",
        "4",
        "--trials",
        "12",
        *ONE_EPOCH,
    )
    output = result.stdout + result.stderr + logs(folder)
    assert result.returncode == 0, output[-3000:]
    assert "Sup3rS3cret" not in output and "postgres:***@" in result.stdout
    study = load(postgres_url, postgres_study)
    assert "Sup3rS3cret" not in json.dumps(study.user_attrs)
    assert_parallel_search(study, budget=12, workers=4)


def running_trial_with_resume(url: str, pid: int | None = None) -> FrozenTrial | None:
    """A RUNNING trial (of worker ``pid``) that has saved at least one epoch checkpoint."""
    try:
        trials = load(url).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    except KeyError:  # the study is not created yet
        return None
    for trial in trials:
        owner = trial.user_attrs.get("worker", {}).get("pid")
        if "resume" in trial.user_attrs and (pid is None or owner == pid):
            return trial
    return None


def assert_retried_and_resumed(study: optuna.Study, killed: FrozenTrial, budget: int) -> None:
    """The killed trial failed, exactly one retry of it finished, resumed after the epoch the
    killed trial had checkpointed; no trial counted twice, none left RUNNING."""
    trials = study.get_trials(deepcopy=False)
    assert study.trials[killed.number].state == TrialState.FAIL
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == budget
    origins = [t.user_attrs["origin_trial"] for t in finished]
    assert len(origins) == len(set(origins)), "a trial was counted twice"
    retries = [t for t in finished if t.user_attrs["origin_trial"] == killed.number]
    assert len(retries) == 1
    retry = retries[0]
    assert retry.params == killed.params
    assert retry.user_attrs["resumed_after_epoch"] >= killed.user_attrs["resume"]["epoch"]
    assert len(retry.user_attrs["val_accuracy"]) == 3  # the whole curve, the resumed part too


def test_a_killed_remote_worker_is_retried_by_heartbeat_and_resumed(
    tiny_study_file: Path,
) -> None:
    """A lone `tuner worker` (as on another host) dies; the other worker notices the stale
    heartbeat after the grace period, and retries its trial from the last epoch checkpoint."""
    folder = tiny_study_file.parent
    url = sqlite_url(folder)
    settings = ["--set", "train.epochs=3", "--set", "search.pruner=none", *RESUMABLE, *WATCH]
    search = start_tuner(
        folder, "search", "tiny.yaml", "--trials", "9", *settings, log="search.log"
    )
    wait_for("a started trial", lambda: load_or_none(url))
    remote = start_tuner(folder, "worker", "--study", "tiny", log="remote.log")
    killed = wait_for("a checkpointed trial", lambda: running_trial_with_resume(url, remote.pid))
    remote.kill()
    remote.wait()
    assert search.wait(timeout=300) == 0, (folder / "search.log").read_text()[-3000:]
    assert_retried_and_resumed(load(url), killed, budget=9)
    assert not list(folder.glob("tuner-artifacts/resume-*"))


def load_or_none(url: str) -> optuna.Study | None:
    try:
        study = load(url)
    except KeyError:
        return None
    return study if study.get_trials(deepcopy=False) else None


def test_a_killed_local_worker_is_replaced_and_its_trial_resumed(tiny_study_file: Path) -> None:
    folder = tiny_study_file.parent
    url = sqlite_url(folder)
    settings = ["--set", "train.epochs=3", "--set", "search.pruner=none", *RESUMABLE, *WATCH]
    search = start_tuner(
        folder, "search", "tiny.yaml", "--workers", "3", "--trials", "9", *settings, log="s.log"
    )
    killed = wait_for("a checkpointed trial", lambda: running_trial_with_resume(url))
    pid = killed.user_attrs["worker"]["pid"]
    subprocess.run(["kill", "-KILL", str(pid)], check=True)
    assert search.wait(timeout=300) == 0, (folder / "s.log").read_text()[-3000:]
    out = (folder / "s.log").read_text()
    assert "died (killed by SIGKILL)" in out and "starting a replacement" in out
    assert_retried_and_resumed(load(url), killed, budget=9)
    assert not list(folder.glob("tuner-artifacts/resume-*"))


def test_sigterm_stops_all_workers_and_a_rerun_finishes(tiny_study_file: Path) -> None:
    folder = tiny_study_file.parent
    url = sqlite_url(folder)
    args = ["search", "tiny.yaml", "--workers", "2", "--trials", "8", *ONE_EPOCH, *WATCH]
    search = start_tuner(folder, *args, log="first.log")
    wait_for(
        "two running trials",
        lambda: (
            load_or_none(url)
            and len(load(url).get_trials(deepcopy=False, states=(TrialState.RUNNING,))) == 2
        ),
    )
    asked = time.monotonic()
    search.send_signal(signal.SIGTERM)
    assert search.wait(timeout=30) == 130
    assert time.monotonic() - asked < 15
    trials = load(url).get_trials(deepcopy=False)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert len([t for t in trials if t.state == TrialState.FAIL]) >= 1

    again = run_tuner(folder, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    study = load(url)
    assert len(study.get_trials(deepcopy=False, states=FINISHED)) == 8
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def test_workers_ride_out_a_postgresql_restart(
    tiny_study_file: Path, postgres_url: str, postgres_study: str
) -> None:
    folder = tiny_study_file.parent
    args = ["search", "tiny.yaml", "--study", postgres_study, "--storage", postgres_url]
    search = start_tuner(
        folder, *args, "--workers", "2", "--trials", "8", "--set", "train.epochs=3", log="pg.log"
    )
    wait_for(
        "a finished trial",
        lambda: _finished_or_zero(postgres_url, postgres_study) >= 1,
    )
    restart_postgres()
    assert search.wait(timeout=400) == 0, (folder / "pg.log").read_text()[-3000:]
    output = logs(folder)
    assert "unreachable" in output and "reachable again" in output  # it was noticed, and survived
    study = load(postgres_url, postgres_study)
    assert len(study.get_trials(deepcopy=False, states=FINISHED)) == 8
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def _finished_or_zero(url: str, name: str) -> int:
    try:
        return len(load(url, name).get_trials(deepcopy=False, states=FINISHED))
    except KeyError:
        return 0


def restart_postgres() -> None:
    """Stop the server, keep it down for a few seconds, start it again."""
    version = next(Path("/etc/postgresql").iterdir()).name
    control = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main"]
    subprocess.run([*control, "stop", "--mode", "fast"], check=True)
    time.sleep(4)
    subprocess.run([*control, "start"], check=True)


def test_a_worker_refuses_what_it_cannot_reproduce(tmp_path: Path, searched: Path) -> None:
    """`tuner worker` on a host without the study's data, or with different data."""
    tree = tmp_path / "images"
    for label in ("cat", "dog"):
        for i in range(6):
            save_image(tree / label / f"{i}.png", Image.new("RGB", (20, 20), (i * 40, 90, 9)))
    study_file = tmp_path / "folder.yaml"
    study_file.write_text(
        "data: {source: folder, path: images, image_size: 16}\n"
        "model: {arch: resnet18, weights: none}\ntrain: {epochs: 1}\n"
        "space: {unfreeze_epoch: never, warmup_epochs: 0}\n"
        "search: {study: pets, trials: 1, baselines: false, confirm_top: 0}\n"
    )
    assert run_tuner(tmp_path, "search", "folder.yaml").returncode == 0
    save_image(tree / "dog" / "new.png", Image.new("RGB", (20, 20)))  # this host's data differs
    changed = run_tuner(tmp_path, "worker", "--study", "pets")
    assert changed.returncode == 2
    assert "differs from the study's" in changed.stderr and "Traceback" not in changed.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    url = sqlite_url(tmp_path)
    missing = run_tuner(elsewhere, "worker", "--study", "pets", "--storage", url)
    assert missing.returncode == 2
    assert "cannot load the study's data" in missing.stderr and "images" in missing.stderr

    unknown = run_tuner(searched, "worker", "--study", "nope")
    assert unknown.returncode == 2 and "no such study" in unknown.stderr
