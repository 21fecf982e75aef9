"""The only place tuner touches Optuna's (and optuna-dashboard's) private API, or depends on
what Optuna does unasked (which parts of a study a pruner reads, to imitate one).

Each use says why the public API does not suffice. tests/search/test_optuna_internals.py
exercises every one against the installed Optuna, so an upgrade that renames or removes
one fails there, with the name, instead of somewhere deep in a worker.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeatThread, get_heartbeat_thread
from optuna.trial import FrozenTrial, TrialState

StaleTrialCallback = Callable[[optuna.Study, FrozenTrial], None]

RDB_INTERNAL_CALLS = (
    "_create_new_trial",
    "_get_best_trial_id",
    "_get_trials",
    "_set_trial_param",
    "_get_stale_trial_ids",
)
"""RDBStorage's private methods that Optuna's own cache layer and heartbeat call during a
search; ResilientStorage must retry them through a database outage like the public ones."""


def study_storage(study: optuna.Study) -> BaseStorage:
    """The storage a study reads and writes through (Optuna's cache layer over ours).

    Optuna offers no public accessor; the launcher needs it to fail a dead worker's trial
    at once (``set_trial_state_values``) instead of waiting out the heartbeat grace period.
    """
    return study._storage


def trial_id(trial: FrozenTrial | optuna.Trial) -> int:
    """The storage's id of a trial (not its number), which storage calls take.

    Public alternative: ``get_trial_id_from_study_id_trial_number``, one more query per call
    and it needs the study's private id too.
    """
    return trial._trial_id


def heartbeat(study: optuna.Study, trial: optuna.Trial) -> BaseHeartbeatThread:
    """The thread that records a running trial's heartbeat (a no-op without heartbeats).

    ``study.optimize`` runs it around each trial; a worker that claims its trials itself (to
    keep the budget exact, see ``workers.run_trial``) runs them the same way.
    """
    return get_heartbeat_thread(trial_id(trial), study_storage(study))


def requeue(study: optuna.Study, trial: optuna.Trial) -> None:
    """Put a just-claimed trial back in the queue (WAITING) for the next worker that asks.

    Optuna offers no public way back from RUNNING; RDBStorage (and the cache over it) allows
    the state change, and ``study.ask`` pops the trial again like an enqueued one, with its
    user attributes (a retry's resume checkpoint) intact.
    """
    study_storage(study).set_trial_state_values(trial_id(trial), state=TrialState.WAITING)


def set_heartbeat(
    storage: RDBStorage, interval: int, grace: int, on_stale: StaleTrialCallback
) -> None:
    """Heartbeat settings on an opened storage.

    RDBStorage takes them only in its constructor, but the study's config (which holds them)
    can be read only once the storage is open; the constructor stores them as these
    attributes, which its heartbeat methods read.
    """
    storage.heartbeat_interval = interval
    storage.grace_period = grace
    storage.heartbeat_stale_trial_callback = on_stale


class NarrowedStudy:
    """A study as Optuna's percentile pruners read it, narrowed to the trials ``keep`` accepts.

    Optuna's pruners judge a trial against a whole study; ``ScheduleAwarePruner`` asks a
    ``MedianPruner`` about a subset of it (the trials that trained alike) and no public API
    takes one. ``PercentilePruner.prune`` reads only ``study.get_trials(deepcopy, states)`` and
    ``study.direction``, so this imitation offers exactly those: a pruner that starts reading
    more fails with AttributeError, and the test of it says which Optuna broke the pact.
    """

    def __init__(self, study: optuna.Study, keep: Callable[[FrozenTrial], bool]) -> None:
        self._study = study
        self._keep = keep
        self.direction = study.direction

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        trials = self._study.get_trials(deepcopy=deepcopy, states=states)
        return [trial for trial in trials if self._keep(trial)]


@dataclass(frozen=True)
class NoteHandle:
    """What optuna-dashboard's ``get_note``/``save_note`` read from a trial, for an ended one.

    They take an ``optuna.Trial`` and read its ``storage``, ``study`` and ``_trial_id``;
    building a Trial for an ended trial would call the sampler's hooks again.
    """

    study: optuna.Study
    _trial_id: int

    @classmethod
    def of(cls, study: optuna.Study, trial: FrozenTrial) -> NoteHandle:
        return cls(study, trial_id(trial))

    @property
    def storage(self) -> BaseStorage:
        return study_storage(self.study)
