"""The queue of studies a pool serves: its order and the changes users make, on real SQLite."""

from __future__ import annotations

import dataclasses

import optuna
import pytest
from optuna.trial import TrialState

from tuner.errors import TunerError
from tuner.search import attrs, queue
from tuner.search.optuna_internals import study_storage


def entry(name: str, **changes: object) -> queue.QueuedStudy:
    base = queue.QueuedStudy(name, 0, queue.QUEUED, "2026-01-01T00:00:00", 10, 0, 0)
    return dataclasses.replace(base, **changes)


def test_next_study_goes_by_priority_then_share_then_age() -> None:
    studies = [
        entry("old", queued_at="2025-01-01"),
        entry("busy", running=3, queued_at="2024-01-01"),
        entry("young", queued_at="2026-06-01"),
    ]
    assert queue.next_study(studies).name == "old"  # the oldest of the least served
    assert queue.next_study([*studies, entry("urgent", priority=2, running=5)]).name == "urgent"
    assert queue.next_study(studies, skip=["old"]).name == "young"
    assert queue.next_study([entry("full", finished=8, running=2)]) is None  # budget taken
    assert queue.next_study([entry("p", state=queue.PAUSED), entry("c", state="cancelled")]) is None


def test_queued_studies_count_trials_and_changes_are_stored(make_context) -> None:
    pinned, _ = make_context("search.study=mine", "search.trials=3")
    storage = study_storage(pinned.study)
    optuna.create_study(study_name="plain", storage=storage)  # not tuner's: never listed
    with pytest.raises(TunerError, match="is not queued"):
        queue.change(storage, "mine", queue.PAUSED)
    queue.queue_study(pinned.study, priority=4)
    first = pinned.study.ask()
    pinned.study.tell(pinned.study.ask(), 0.5)
    [found] = queue.queued_studies(storage)
    assert (found.name, found.priority, found.state) == ("mine", 4, queue.QUEUED)
    assert (found.budget, found.finished, found.running, found.has_room) == (3, 1, 1, True)
    assert first.number == 0

    changed = queue.change(storage, "mine", queue.PAUSED, priority=1, reason="3 trials failed")
    assert changed["state"] == queue.PAUSED and changed["priority"] == 1
    [found] = queue.queued_studies(storage)
    assert (found.state, found.reason, found.has_room) == (queue.PAUSED, "3 trials failed", False)
    queue.queue_study(pinned.study, priority=0)  # queued again: its age is kept
    assert queue.queued_studies(storage)[0].queued_at == changed["queued_at"]
    queue.refuse_on_host(pinned.study, "gpu-7", "no data")
    assert queue.queued_studies(storage)[0].refused == {"gpu-7": "no data"}
    assert pinned.study.user_attrs[attrs.QUEUE]["state"] == queue.QUEUED
    pinned.study.tell(first, state=TrialState.PRUNED)
    assert queue.queued_studies(storage)[0].finished == 2
