"""Fixtures for end-to-end runs of the real ``tuner`` command in a temp folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.tuner_cli import TINY_STUDY, run_tuner


@pytest.fixture
def tiny_study_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_STUDY)
    return path


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder in which a tiny search has run to completion (shared by a module's tests)."""
    folder = tmp_path_factory.mktemp("searched")
    (folder / "tiny.yaml").write_text(TINY_STUDY)
    result = run_tuner(folder, "search", "tiny.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    (folder / "search.out").write_text(result.stdout)
    (folder / "search.err").write_text(result.stderr)
    return folder
