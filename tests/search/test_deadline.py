"""A search run's time budget: trials stop starting in time for the trial and the confirm."""

from __future__ import annotations

import time

import optuna
import pytest

from tuner.search import deadline


@pytest.fixture
def study() -> optuna.Study:
    """Three complete trials that took 10, 20 and 30 s (best first), in a real Optuna study."""
    study = optuna.create_study(direction="maximize")
    for value, seconds in ((0.9, 10.0), (0.8, 20.0), (0.7, 30.0)):
        epochs = {"epoch_seconds": [seconds / 2, seconds / 2]}
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs=epochs))
    return study


def test_the_confirm_is_its_runs_over_the_workers_each_as_long_as_a_top_trial(study) -> None:
    now = time.time()
    ends = deadline.Deadline(now + 100, 10.0, workers=2, confirm_top=3, confirm_seeds=2)
    assert deadline.full_trial_seconds(study, 3) == pytest.approx(20.0)
    assert ends.confirm_seconds(study) == pytest.approx(60.0)  # 6 runs, 3 rounds on 2 workers
    assert ends.starts_allowed(study, now)  # 100 s left: a 20 s trial, then 60 s of confirm
    assert not ends.starts_allowed(study, now + 25)  # 75 s left
    top_one = deadline.Deadline(now + 100, 10.0, workers=1, confirm_top=1, confirm_seeds=2)
    assert top_one.confirm_seconds(study) == pytest.approx(20.0)  # the best trial's 10 s twice


def test_the_confirm_takes_at_most_a_fifth_of_the_budget(study) -> None:
    now = time.time()

    def fits(minutes: float, workers: int = 1) -> int:
        ends = deadline.Deadline(now + 60 * minutes, minutes, workers, 3, confirm_seeds=2)
        return ends.confirm_top_that_fits(study)

    assert deadline.CONFIRM_SHARE == 0.2
    assert fits(10) == 3  # 120 s: 6 runs of 20 s
    assert fits(7) == 2  # 84 s: 4 runs
    assert fits(5) == 0  # 60 s: 3 runs, one candidate twice: no rival, no confirm
    assert fits(5, workers=2) == 3  # 3 rounds of 2 runs
    ends = deadline.Deadline(now + 300, 5.0, workers=1, confirm_top=3, confirm_seeds=2)
    assert ends.confirm_seconds(study) == 0.0  # nothing reserved for a confirm that won't run


def test_without_a_confirm_only_the_trial_itself_must_fit(study) -> None:
    now = time.time()
    ends = deadline.Deadline(now + 11, 1.0, workers=1, confirm_top=0, confirm_seeds=2)
    assert ends.confirm_seconds(study) == 0.0
    assert ends.starts_allowed(study, now)  # the best trial took 10 s
    assert not ends.starts_allowed(study, now + 2)


def test_before_any_trial_completes_trials_start_until_the_end() -> None:
    empty = optuna.create_study(direction="maximize")
    now = time.time()
    ends = deadline.Deadline(now + 5, 1.0, workers=1, confirm_top=3, confirm_seeds=2)
    assert ends.starts_allowed(empty, now + 4.9) and not ends.starts_allowed(empty, now + 5)


def test_a_run_without_minutes_clears_an_earlier_runs_deadline(study) -> None:
    assert deadline.load(study) is None and deadline.starts_allowed(study)
    deadline.store(study, deadline.Deadline(time.time() - 1, 0.5, 1, 3, 2))
    assert deadline.load(study).minutes == 0.5
    assert not deadline.starts_allowed(study)  # its time is up
    deadline.store(study, None)
    assert deadline.load(study) is None and deadline.starts_allowed(study)
