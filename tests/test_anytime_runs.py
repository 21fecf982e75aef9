"""``bench/anytime.py`` resumes a race only with runs that still count: same machine, and for
tuner's runs the same built-in defaults (a wall-clock race mixes neither)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import anytime  # noqa: E402


def _kept(tmp_path: Path, searcher: str, **extra: object) -> Path:
    folder = tmp_path / f"fashion-{searcher}-0"
    folder.mkdir()
    run = anytime.Run(searcher, "fashion", 0, ((1.0, 0.5),), None, 3)
    (folder / "run.json").write_text(json.dumps({**anytime._run_record(run), **extra}))
    return folder


def test_a_run_of_this_machine_and_these_defaults_is_kept(tmp_path: Path) -> None:
    for searcher in ("optuna", "tuner"):
        kept = anytime._kept_run(_kept(tmp_path, searcher))
        assert kept is not None and kept.searcher == searcher and kept.trials == 3


def test_a_run_of_another_machine_stops_the_race(tmp_path: Path) -> None:
    folder = _kept(tmp_path, "optuna", machine="2 cores (Some Other CPU), torch 0")
    with pytest.raises(SystemExit, match="does not mix machines"):
        anytime._kept_run(folder)


def test_a_tuner_run_with_other_defaults_runs_again(tmp_path: Path) -> None:
    assert anytime._kept_run(_kept(tmp_path, "tuner", defaults="0123456789ab")) is None
    assert anytime._kept_run(_kept(tmp_path, "ray", defaults="0123456789ab")) is not None


def test_a_work_folder_keeps_its_upstream_build(tmp_path: Path) -> None:
    anytime._same_build(tmp_path, "9c295af3")
    anytime._same_build(tmp_path, "9c295af3")  # the same build resumes
    with pytest.raises(SystemExit, match="built f20f225c"):
        anytime._same_build(tmp_path, "f20f225c")
