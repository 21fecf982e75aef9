"""Storage URLs, secrets, SQLite settings, outages and artifact stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner import storage as storage_mod
from tuner.errors import TunerError


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
