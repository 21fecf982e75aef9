"""``bench/anytime.py`` resumes a race only with runs that still count: same machine, same
budget, and for tuner's runs the same built-in defaults (a wall-clock race mixes none); what a
work folder keeps is enough to analyse it again."""

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


def test_a_race_keeps_its_budget_and_is_analysed_from_its_kept_runs(tmp_path: Path) -> None:
    anytime.keep_race(tmp_path, 360.0, {"fashion": "five clothing classes"})
    anytime.keep_race(tmp_path, 360.0, {"default": "digits"})  # a later task joins the race
    with pytest.raises(SystemExit, match="runs --budget 360, not 120"):
        anytime.keep_race(tmp_path, 120.0, {"fashion": "five clothing classes"})
    (tmp_path / "runs").mkdir()
    for searcher in ("optuna", "tuner"):
        _kept(tmp_path / "runs", searcher)
    other = tmp_path / "runs" / "transfer-optuna-1"  # a task this race never ran: left out
    other.mkdir()
    (other / "run.json").write_text(json.dumps({"searcher": "optuna", "task": "transfer",
                                                "seed": 1}))  # fmt: skip
    race = anytime.load_race(tmp_path)
    assert race["budget"] == 360.0 and set(race["tasks"]) == {"fashion", "default"}
    assert sorted(r["searcher"] for r in race["runs"]) == ["optuna", "tuner"]
    assert race["seeds"] == 1 and race["minutes"] is None
    runs = [anytime._run_from(item) for item in race["runs"]]
    assert all(run.best_at(360.0) == 0.5 for run in runs)


def test_analysing_a_folder_without_a_race_says_what_it_takes(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"race\.json: not found; --analyse takes"):
        anytime.load_race(tmp_path)


def test_the_half_time_goal_needs_a_time_on_both_sides() -> None:
    assert anytime._half_time_verdict(50.0, 100.0) == "0.50 | met"
    assert anytime._half_time_verdict(80.0, 100.0) == "0.80 | NOT met"
    assert anytime._half_time_verdict(float("inf"), 100.0) == "inf | NOT met"
    assert anytime._half_time_verdict(80.0, float("inf")).startswith("n/a | NOT met")
