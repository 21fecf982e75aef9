"""The study as source of truth: storage URLs, pinned config, refusals, checkpoint eviction."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner import study as study_mod
from tuner.config import load_config
from tuner.errors import TunerError
from tuner.model import ResolvedWeights


def test_storage_and_artifacts_come_from_flag_then_env_then_default(monkeypatch) -> None:
    monkeypatch.delenv("TUNER_STORAGE", raising=False)
    monkeypatch.delenv("TUNER_ARTIFACTS", raising=False)
    assert study_mod.storage_url(None) == "sqlite:///tuner.db"
    assert study_mod.artifacts_path(None) == "tuner-artifacts"
    monkeypatch.setenv("TUNER_STORAGE", "sqlite:///env.db")
    monkeypatch.setenv("TUNER_ARTIFACTS", "/shared/ckpt")
    assert study_mod.storage_url(None) == "sqlite:///env.db"
    assert study_mod.artifacts_path(None) == "/shared/ckpt"
    assert study_mod.storage_url("sqlite:///flag.db") == "sqlite:///flag.db"


def test_passwords_are_redacted() -> None:
    shown = study_mod.redact("postgresql+psycopg://tuner:s3cret@db.example:5432/studies")
    assert "s3cret" not in shown and "***" in shown and "db.example" in shown


def test_an_unreachable_database_error_hides_the_password() -> None:
    with pytest.raises(TunerError) as caught:
        study_mod.open_storage("postgresql+psycopg://tuner:s3cret@127.0.0.1:1/none")
    assert "s3cret" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)


def test_read_only_commands_do_not_create_a_database(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(TunerError, match="no such database file"):
        study_mod.open_storage(f"sqlite:///{missing}", must_exist=True)
    assert not missing.exists()
    with pytest.raises(TunerError, match="no such folder"):
        study_mod.artifact_store(str(tmp_path / "nope"), must_exist=True)


def test_sqlite_storage_uses_wal(tmp_path: Path) -> None:
    storage = study_mod.open_storage(f"sqlite:///{tmp_path / 'wal.db'}")
    with storage.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_the_study_pins_config_weights_and_fingerprint(tmp_path: Path) -> None:
    storage = study_mod.open_storage(f"sqlite:///{tmp_path / 's.db'}")
    config = load_config(None, ["search.study=pinned", "train.epochs=3"])
    weights = ResolvedWeights("file", "/w/resnet18.pt", "ab" * 32)
    study_mod.create_pinned(storage, config, weights, "fp-123")
    loaded = study_mod.load_pinned(storage, "pinned")
    assert (loaded.config, loaded.weights, loaded.fingerprint) == (config, weights, "fp-123")
    assert loaded.study.direction.name == "MAXIMIZE"
    study_mod.check_same_config(
        loaded, load_config(None, ["search.study=pinned", "train.epochs=3", "search.trials=9"])
    )
    with pytest.raises(
        TunerError, match=r"model\.arch: study has 'resnet18', this run has 'resnet34'"
    ):
        study_mod.check_same_config(
            loaded,
            load_config(None, ["search.study=pinned", "train.epochs=3", "model.arch=resnet34"]),
        )


def test_only_study_is_picked_when_unambiguous(tmp_path: Path) -> None:
    storage = study_mod.open_storage(f"sqlite:///{tmp_path / 'o.db'}")
    with pytest.raises(TunerError, match="no study yet"):
        study_mod.only_study(storage, required=True)
    for name in ("a", "b"):
        study_mod.create_pinned(
            storage,
            load_config(None, [f"search.study={name}"]),
            ResolvedWeights.random_init(),
            "fp",
        )
    assert study_mod.only_study(storage, required=False) is None
    with pytest.raises(TunerError, match=r"several studies \(a, b\)"):
        study_mod.only_study(storage, required=True)
