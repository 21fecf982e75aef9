"""Every private Optuna API tuner uses, exercised against the installed Optuna.

An Optuna (or optuna-dashboard) upgrade that renames or drops one fails here by name.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from optuna_dashboard import get_note, save_note

from tuner.search import optuna_internals
from tuner.search.storage import open_storage


def _study(tmp_path: Path) -> tuple[RDBStorage, optuna.Study]:
    storage = open_storage(f"sqlite:///{tmp_path / 'internals.db'}")
    study = optuna.create_study(study_name="internals", storage=storage)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    return storage, study


def test_study_storage_is_the_storage_the_study_writes_through(tmp_path: Path) -> None:
    _, study = _study(tmp_path)
    through = optuna_internals.study_storage(study)
    assert isinstance(through, optuna.storages.BaseStorage)
    trial = study.trials[1]
    assert through.get_trial(optuna_internals.trial_id(trial)).number == 1
    # what the launcher does with it: fail a trial by id
    running = study.ask()
    frozen = study.get_trials(states=(TrialState.RUNNING,))[0]
    assert through.set_trial_state_values(optuna_internals.trial_id(frozen), TrialState.FAIL)
    assert study.trials[running.number].state == TrialState.FAIL


def test_trial_id_matches_the_public_lookup(tmp_path: Path) -> None:
    storage, study = _study(tmp_path)
    study_id = storage.get_study_id_from_name("internals")
    for trial in study.trials:
        expected = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        assert optuna_internals.trial_id(trial) == expected


def test_set_heartbeat_is_what_the_storage_reports(tmp_path: Path) -> None:
    storage, _ = _study(tmp_path)

    def on_stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        pass

    assert storage.get_heartbeat_interval() is None
    optuna_internals.set_heartbeat(storage, 7, 30, on_stale)
    assert storage.get_heartbeat_interval() == 7
    assert storage.get_heartbeat_stale_trial_callback() is on_stale
    assert storage.grace_period == 30


def test_the_heartbeat_thread_records_a_running_trials_heartbeat(tmp_path: Path) -> None:
    storage, study = _study(tmp_path)
    optuna_internals.set_heartbeat(storage, 1, 30, lambda study, trial: None)
    trial = study.ask()
    with optuna_internals.heartbeat(study, trial):
        pass
    stale = storage._get_stale_trial_ids(storage.get_study_id_from_name("internals"))
    assert stale == []  # a heartbeat was recorded, and it is fresh
    storage.grace_period = 0
    time.sleep(1.1)
    assert storage._get_stale_trial_ids(storage.get_study_id_from_name("internals")) == [
        optuna_internals.trial_id(trial)
    ]


def test_requeue_puts_a_running_trial_back_for_the_next_ask(tmp_path: Path) -> None:
    _, study = _study(tmp_path)
    trial = study.ask()
    trial.set_user_attr("resume", {"artifact": "r.pt", "epoch": 1})
    optuna_internals.requeue(study, trial)
    assert study.trials[trial.number].state == TrialState.WAITING
    again = study.ask()
    assert again.number == trial.number and again.user_attrs["resume"]["epoch"] == 1


def test_rdb_internal_calls_exist_as_methods() -> None:
    for name in optuna_internals.RDB_INTERNAL_CALLS:
        method = getattr(RDBStorage, name, None)
        assert callable(method), f"RDBStorage.{name} is gone: update RDB_INTERNAL_CALLS"
        assert "self" in inspect.signature(method).parameters


def test_rdb_internal_calls_are_what_a_search_calls(tmp_path: Path, monkeypatch) -> None:
    """The private methods listed are the ones a cached study really calls."""
    called: set[str] = set()
    for name in optuna_internals.RDB_INTERNAL_CALLS:
        original = getattr(RDBStorage, name)

        def spy(self, *args, _name=name, _original=original, **kwargs):
            called.add(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(RDBStorage, name, spy)
    storage = RDBStorage(f"sqlite:///{tmp_path / 'spied.db'}", heartbeat_interval=60)
    study = optuna.create_study(study_name="spied", storage=storage)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
    study.best_trial  # noqa: B018
    assert {"_create_new_trial", "_set_trial_param", "_get_stale_trial_ids"} <= called


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_a_median_pruner_judges_a_trial_by_the_narrowed_study_alone(
    tmp_path: Path, direction: str
) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'narrowed.db'}")
    study = optuna.create_study(storage=storage, direction=direction)
    for group, value in (("low", 0.2), ("low", 0.3), ("high", 0.8), ("high", 0.9)):
        trial = study.ask()
        trial.set_user_attr("group", group)
        trial.report(value, 0)
        study.tell(trial, value)
    study.ask().report(0.5, 0)  # the trial judged: between the two groups
    judged = study.get_trials(states=(TrialState.RUNNING,))[0]
    median = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)

    def among(group: str) -> optuna_internals.NarrowedStudy:
        return optuna_internals.NarrowedStudy(study, lambda t: t.user_attrs.get("group") == group)

    assert [t.number for t in among("high").get_trials(states=(TrialState.COMPLETE,))] == [2, 3]
    worse_than_low = direction == "minimize"  # 0.5 is worse than 0.25 when lower is better
    assert bool(median.prune(among("low"), judged)) is worse_than_low
    assert bool(median.prune(among("high"), judged)) is not worse_than_low
    assert not median.prune(among("nobody"), judged)  # no complete trial: nothing to judge by


def test_note_handle_round_trips_a_note_of_an_ended_trial(tmp_path: Path) -> None:
    _, study = _study(tmp_path)
    handle = optuna_internals.NoteHandle.of(study, study.trials[0])
    save_note(handle, "## ended trial")
    assert get_note(handle) == "## ended trial"
    other = optuna_internals.NoteHandle.of(study, study.trials[1])
    assert get_note(other) == ""
