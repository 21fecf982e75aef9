"""Storage URLs, secrets, SQLite settings, outages and artifact stores."""

from __future__ import annotations

import importlib.util
import io
import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy

from tuner.errors import TunerError
from tuner.search import storage as storage_mod


def test_storage_and_artifacts_come_from_flag_then_env_then_default(monkeypatch) -> None:
    monkeypatch.delenv("TUNER_STORAGE", raising=False)
    monkeypatch.delenv("TUNER_ARTIFACTS", raising=False)
    assert storage_mod.storage_url(None) == "sqlite:///tuner.db"
    assert storage_mod.artifacts_uri(None) == "tuner-artifacts"
    monkeypatch.setenv("TUNER_STORAGE", "sqlite:///env.db")
    monkeypatch.setenv("TUNER_ARTIFACTS", "/shared/ckpt")
    assert storage_mod.storage_url(None) == "sqlite:///env.db"
    assert storage_mod.artifacts_uri(None) == "/shared/ckpt"
    assert storage_mod.storage_url("sqlite:///flag.db") == "sqlite:///flag.db"


def test_passwords_are_redacted() -> None:
    shown = storage_mod.redact("postgresql+psycopg://tuner:s3cret@db.example:5432/studies")
    assert "s3cret" not in shown and "***" in shown and "db.example" in shown


def test_an_unreachable_database_error_hides_the_password() -> None:
    with pytest.raises(TunerError) as caught:
        storage_mod.open_storage("postgresql+psycopg://tuner:s3cret@127.0.0.1:1/none")
    assert "s3cret" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)


def test_read_only_commands_do_not_create_a_database(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(TunerError, match="no such database file"):
        storage_mod.open_storage(f"sqlite:///{missing}", must_exist=True)
    assert not missing.exists()
    with pytest.raises(TunerError, match="no such folder"):
        storage_mod.artifact_store(str(tmp_path / "nope"), must_exist=True)


def test_sqlite_storage_uses_wal(tmp_path: Path) -> None:
    storage = storage_mod.open_storage(f"sqlite:///{tmp_path / 'wal.db'}")
    with storage.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_artifact_stores_are_chosen_by_uri(tmp_path: Path) -> None:
    plain = storage_mod.artifact_store(str(tmp_path / "plain"))
    by_uri = storage_mod.artifact_store(f"file://{tmp_path / 'shared'}")
    for store, folder in ((plain, "plain"), (by_uri, "shared")):
        store.write("a.bin", io.BytesIO(b"checkpoint"))
        assert (tmp_path / folder / "a.bin").read_bytes() == b"checkpoint"
        with store.open_reader("a.bin") as reader:
            assert reader.read() == b"checkpoint"
    with pytest.raises(TunerError, match="unsupported scheme 'gs'"):
        storage_mod.artifact_store("gs://bucket/x")
    with pytest.raises(TunerError, match="name a bucket"):
        storage_mod.artifact_store("s3:///prefix")


@pytest.mark.skipif(importlib.util.find_spec("boto3") is not None, reason="boto3 is installed")
def test_s3_without_boto3_says_what_to_install() -> None:
    with pytest.raises(TunerError, match=r"S3 needs boto3; install it with pip install"):
        storage_mod.artifact_store("s3://bucket/tuner")


def test_lost_connections_and_locks_are_transient_bad_sql_is_not() -> None:
    locked = sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("database is locked"))
    wrapped = optuna.exceptions.StorageInternalError("commit failed")
    wrapped.__cause__ = locked
    assert storage_mod.is_transient(locked) and storage_mod.is_transient(wrapped)
    bad = sqlalchemy.exc.ProgrammingError("SELEC", {}, Exception("syntax error"))
    assert not storage_mod.is_transient(bad)
    assert not storage_mod.is_transient(ValueError("x"))


def test_a_storage_call_waits_for_the_database_to_come_back(tmp_path: Path) -> None:
    """A real write lock held by another connection, released after a second: the call waits
    (through SQLite's own busy timeout and tuner's retries) instead of failing the worker."""
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    storage = storage_mod.open_storage(url)
    study_id = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "busy")
    blocker = sqlite3.connect(tmp_path / "busy.db", isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")
    releaser = threading.Timer(1.0, blocker.execute, args=("COMMIT",))
    releaser.start()
    started = time.monotonic()
    storage.set_study_user_attr(study_id, "k", "v")
    assert time.monotonic() - started >= 0.9
    assert storage.get_study_user_attrs(study_id) == {"k": "v"}
    releaser.join()
    blocker.close()


_POPPER = """
import json, sys
import optuna
from tuner.search.storage import open_storage
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.load_study(study_name="queue", storage=open_storage(sys.argv[1]))
print(json.dumps([study.ask().number for _ in range(int(sys.argv[2]))]))
"""


def test_processes_popping_one_sqlite_queue_never_take_the_same_trial(tmp_path: Path) -> None:
    """Optuna pops a queued trial by reading it WAITING, then setting it RUNNING. Python's
    sqlite3 begins a transaction only at the write, so without a lock held from the read two
    workers could both pop one trial (the classic recipes, when a search starts its workers)
    and train it twice."""
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    study = optuna.create_study(study_name="queue", storage=storage_mod.open_storage(url))
    processes, each = 4, 15
    for i in range(processes * each):
        study.enqueue_trial({"x": float(i)}, skip_if_exists=False)
    poppers = [
        subprocess.Popen([sys.executable, "-c", _POPPER, url, str(each)], stdout=subprocess.PIPE)
        for _ in range(processes)
    ]
    popped = [n for p in poppers for n in json.loads(p.communicate(timeout=300)[0])]
    assert all(p.returncode == 0 for p in poppers)
    assert sorted(popped) == list(range(processes * each)), "a trial was popped twice"
    assert len(study.get_trials(deepcopy=False)) == processes * each  # none made anew
