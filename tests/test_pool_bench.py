"""bench/pool.py's measures: what a switch of study costs and how idle the workers were."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import pool


def trial(worker: str, start: float, end: float) -> FrozenTrial:
    zero = datetime.datetime(2026, 1, 1)
    made = optuna.trial.create_trial(
        state=TrialState.COMPLETE, value=0.5, user_attrs={"worker": {"worker": worker}}
    )
    made.datetime_start = zero + datetime.timedelta(seconds=start)
    made.datetime_complete = zero + datetime.timedelta(seconds=end)
    return made


def test_a_switch_costs_its_gap_beyond_the_usual_gap_between_trials() -> None:
    found = [
        ("a", trial("w/0", 0, 10)), ("a", trial("w/0", 11, 20)),  # a gap of 1 within a study
        ("b", trial("w/0", 24, 30)),  # a switch: a gap of 4, so 3 beyond the usual
        ("a", trial("w/1", 0, 9)), ("a", trial("w/1", 10, 19)),  # a gap of 1
    ]  # fmt: skip
    assert pool.switch_costs(found) == (3.0,)


def test_idle_is_what_the_workers_did_not_spend_in_trials() -> None:
    outcome = pool.Outcome("x", wall=100.0, trial_seconds=150.0, workers=2)
    assert outcome.idle == 50.0
    assert "| x | 1 | 100.0 (100.0-100.0) | 50.0 (50.0-50.0) | 25% | 0.0 | - |" in pool.table(
        [outcome]
    )
