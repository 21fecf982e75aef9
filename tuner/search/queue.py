"""The queue a pool of workers serves: which studies are queued, in what order, and what the
user changed (pause, resume, cancel, priority, budget).

Everything lives in the studies' attributes in the storage, so every pool worker on every host
reads the same queue and ``tuner queue`` changes it from anywhere, with no server of its own.
A study is queued by ``tuner search --queue`` (or ``tuner submit`` without local workers); a
study made by a plain ``tuner search`` is not queued, so a pool never takes over a search
that brings its own workers.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from tuner.errors import TunerError
from tuner.search import attrs
from tuner.search import study as study_mod

QUEUED, PAUSED, CANCELLED = "queued", "paused", "cancelled"
STATES = (QUEUED, PAUSED, CANCELLED)


@dataclass(frozen=True)
class QueuedStudy:
    """One queued study as a pool worker and ``tuner queue`` see it."""

    name: str
    priority: int
    state: str
    queued_at: str  # ISO time in UTC: of two equal studies, the older goes first
    budget: int
    finished: int
    running: int
    workers: tuple[str, ...] = ()  # the workers running its trials now
    reason: str = ""  # why it is paused, when a pool paused it (failures in a row)
    refused: dict[str, str] = field(default_factory=dict)  # host -> why it cannot load it

    @property
    def has_room(self) -> bool:
        """Whether a worker may start one of its trials now: queued, budget not taken."""
        return self.state == QUEUED and self.finished + self.running < self.budget


def queue_study(study: optuna.Study, priority: int) -> None:
    """Queue ``study`` (again) for pools at ``priority``; its age is kept when requeued."""
    old = study.user_attrs.get(attrs.QUEUE, {})
    queued_at = old.get("queued_at") or datetime.datetime.now(datetime.UTC).isoformat()
    study.set_user_attr(
        attrs.QUEUE, {"priority": priority, "state": QUEUED, "queued_at": queued_at}
    )


def change(
    storage: optuna.storages.BaseStorage,
    name: str,
    state: str | None = None,
    priority: int | None = None,
    reason: str = "",
) -> dict:
    """Set a queued study's state and/or priority; its entry as stored now."""
    study = _load(storage, name)
    entry = dict(study.user_attrs.get(attrs.QUEUE) or {})
    if not entry:
        raise TunerError(
            f"study {name!r} is not queued (it runs with its own workers). Queue a study with "
            "`tuner search CONFIG --queue`."
        )
    if state is not None:
        entry["state"], entry["reason"] = state, reason
    if priority is not None:
        entry["priority"] = priority
    study.set_user_attr(attrs.QUEUE, entry)
    return entry


def describe_change(action: str, entry: dict) -> str:
    """What a change to the queue means for the study's trials, in words."""
    now = f"{entry['state']}, priority {entry['priority']}"
    if action == "pause":
        return f"{now}: no new trial starts until `tuner queue resume`; running ones finish."
    if action == "cancel":
        return f"{now}: no new trial starts; running ones finish; its finished trials stay."
    return f"{now}: pools start its trials again while it has budget left."


def refuse_on_host(study: optuna.Study, host: str, reason: str) -> None:
    """Record that this host's pool cannot serve ``study`` (one key per host: no host
    overwrites another's)."""
    study.set_user_attr(f"{attrs.REFUSED_PREFIX}{host}", reason)


def queued_studies(storage: optuna.storages.BaseStorage) -> list[QueuedStudy]:
    """Every queued study (paused and cancelled ones included), in the order pools serve them."""
    found = []
    for frozen in storage.get_all_studies():
        entry = frozen.user_attrs.get(attrs.QUEUE)
        if not entry or attrs.CONFIG not in frozen.user_attrs:
            continue
        study_id = storage.get_study_id_from_name(frozen.study_name)
        trials = storage.get_all_trials(
            study_id, deepcopy=False, states=(*study_mod.FINISHED, TrialState.RUNNING)
        )
        running = [t for t in trials if t.state == TrialState.RUNNING]
        workers = (str(t.user_attrs.get(attrs.WORKER, {}).get("worker", "?")) for t in running)
        refused = {
            key[len(attrs.REFUSED_PREFIX) :]: str(value)
            for key, value in frozen.user_attrs.items()
            if key.startswith(attrs.REFUSED_PREFIX)
        }
        budget = int(frozen.user_attrs[attrs.CONFIG]["search"]["trials"])
        found.append(QueuedStudy(
            frozen.study_name, int(entry.get("priority", 0)), str(entry.get("state", QUEUED)),
            str(entry.get("queued_at", "")), budget, len(trials) - len(running), len(running),
            tuple(sorted(workers)), str(entry.get("reason", "")), refused,
        ))  # fmt: skip
    return sorted(found, key=_order)


def next_study(queue: Iterable[QueuedStudy], skip: Iterable[str] = ()) -> QueuedStudy | None:
    """The study a free worker serves next: the highest priority; among equals, the fewest
    trials in flight (every study of one priority gets an equal share of the workers); then
    the oldest. ``skip``: studies this worker cannot serve."""
    skipped = set(skip)
    ready = [q for q in queue if q.has_room and q.name not in skipped]
    return min(ready, key=_order) if ready else None


def _order(q: QueuedStudy) -> tuple[int, int, str, str]:
    return (-q.priority, q.running, q.queued_at, q.name)


def _load(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study:
    if not study_mod.study_exists(storage, name):
        known = ", ".join(study_mod.study_names(storage)) or "none"
        raise TunerError(f"study {name!r} is not in this storage (studies there: {known}).")
    return optuna.load_study(study_name=name, storage=storage)
