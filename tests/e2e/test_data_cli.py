"""Where the data lives, as a user meets it: printed at start, kept on the trials, refused early."""

from __future__ import annotations

from pathlib import Path

import optuna

from tests.e2e.tuner_cli import run_tuner


def test_a_streamed_search_says_so_and_records_it_on_its_trials(
    tmp_path: Path, tiny_study_file: Path
) -> None:
    result = run_tuner(
        tmp_path, "search", str(tiny_study_file), "--trials", "2",
        "--set", "train.data_on_device=never",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "placement: streamed from the host's memory map to cpu" in result.stdout
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'tuner.db'}")
    trials = study.get_trials(
        states=[optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
    )
    assert len(trials) == 2 and all(t.user_attrs["worker"]["data"] == "streamed" for t in trials)


def test_always_with_data_that_cannot_fit_stops_before_any_trial(
    tmp_path: Path, tiny_study_file: Path
) -> None:
    result = run_tuner(
        tmp_path, "search", str(tiny_study_file),
        "--set", "train.data_on_device=always", "--set", "train.data_on_device_share=0.0000001",
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]  # after the data's progress lines
    assert line.startswith("tuner search: error: train.data_on_device: always, but the data (")
    assert "train.data_on_device_share=1e-07" in line and "set it to auto or never" in line
