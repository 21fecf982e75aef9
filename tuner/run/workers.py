"""One worker: join a study from its stored config, then run trials until the budget is met."""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace

import optuna
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import DeviceFailedError, TunerError
from tuner.run import signals
from tuner.run.host import SearchContext, ready_host
from tuner.run.identity import WorkerIdentity, owner_gone
from tuner.run.objective import make_objective
from tuner.search import attrs, deadline, notes
from tuner.search import study as study_mod
from tuner.search.optuna_internals import heartbeat, requeue, study_storage, trial_id
from tuner.search.storage import open_storage, redact

TrialCallback = Callable[[optuna.Study, FrozenTrial], None]

WAIT_SECONDS = 2.0
"""How often a worker waiting on the trials in flight looks at the study again."""


@dataclass(frozen=True)
class WorkerOutcome:
    """Why a worker stopped, for the summary."""

    finished: int
    budget: int
    stopped_reason: str | None


@dataclass(frozen=True)
class JoinRequest:
    """What `tuner worker` is told: where the study is, and what this host decides for itself."""

    study: str
    storage_url: str
    artifacts: str
    worker: WorkerIdentity
    device: str | None = None  # overrides the study's train.device on this host


def join(request: JoinRequest) -> tuple[study_mod.PinnedStudy, SearchContext]:
    """Rebuild everything a worker needs from the study alone, or refuse with the reason.

    The worker must train what the study's creator would: the same data (checked by
    fingerprint) and the same starting weights (checked by SHA-256 when the model is built).
    """
    where = f"study {request.study!r} in {redact(request.storage_url)}"
    storage = open_storage(request.storage_url, must_exist=True)
    if not study_mod.study_exists(storage, request.study):
        known = ", ".join(study_mod.study_names(storage)) or "none"
        raise TunerError(
            f"{where}: no such study (studies there: {known}). Start it with `tuner search` first."
        )
    pinned = study_mod.load_pinned(storage, request.study, worker=request.worker.name)
    config = pinned.config
    if request.device is not None:
        config = replace(config, train=replace(config.train, device=request.device))
    context = ready_host(
        config, pinned.weights, request.artifacts, study_name=request.study,
        fingerprint=pinned.fingerprint, worker=request.worker,
    )  # fmt: skip
    return replace(pinned, config=config), context


def run_worker(
    study: optuna.Study,
    context: SearchContext,
    callbacks: tuple[TrialCallback, ...] = (),
) -> WorkerOutcome:
    """Run trials until the study holds its budget of finished trials (complete + pruned), or
    its run's time is up (`tuner search --minutes`, :mod:`tuner.search.deadline`).

    The budget counts the whole study, all workers on all hosts, and is read from the study
    before every trial, so a re-run only runs what is missing and a raised budget reaches
    running workers. It is exact: a worker starts a trial only while the finished trials and
    those in flight fall short of it, and while they don't it waits, since a trial in flight
    may yet fail (its worker died, or it raised) and leave a place to run, its retry first.
    Failed trials don't count; after ``search.max_consecutive_failures`` of them in a row in
    the study, every worker stops with the last failure's reason instead of looping.
    """
    limit = context.config.search.max_consecutive_failures
    first = len(study.get_trials(deepcopy=False))  # failures of an earlier run don't count
    objective = make_objective(context)
    ended = (*callbacks, notes.note_when_ended(context.config))
    reason = None
    try:
        while reason is None and not study_mod.budget_met(study) and deadline.starts_allowed(study):
            with signals.deferred():  # a claimed trial is run or put back, never left RUNNING
                trial = claim_trial(study)
                done = None if trial is None else run_trial(study, trial, objective, ended)
            if done is None:
                time.sleep(WAIT_SECONDS)
            elif done.state == TrialState.FAIL:
                reason = study_mod.failure_streak(study, limit, since=first)
    except (KeyboardInterrupt, DeviceFailedError):
        leave_for_retry(study, context)
        raise
    return WorkerOutcome(study_mod.finished_count(study), study_mod.stored_budget(study), reason)


def claim_trial(study: optuna.Study) -> optuna.Trial | None:
    """A trial to run within the budget, or None while the trials in flight may fill it.

    The trials of dead workers are failed first (after the heartbeat grace period), which
    queues their retries. Two workers may pass the first check at once; the trial numbers
    then decide, and the one whose trial came later puts it back in the queue untouched.
    """
    study_mod.fail_stale_trials(study)
    fail_trials_of(study, owner_gone, retry=True)  # no need to wait out their heartbeats
    if not study_mod.has_room(study) or not deadline.starts_allowed(study):
        return None
    trial = ask(study)
    if study_mod.has_room(study, before=trial.number):
        return trial
    requeue(study, trial)
    return None


def fail_trials_of(
    study: optuna.Study, owned: Callable[[dict], bool], retry: bool
) -> list[FrozenTrial]:
    """Fail the RUNNING trials whose ``worker`` attribute ``owned`` picks; the ones failed.

    With ``retry`` each is queued again (carrying its resume checkpoint), as a trial whose
    heartbeat went stale is; without, the caller decides what becomes of its checkpoint.
    """
    storage = study_storage(study)
    callback = storage.get_heartbeat_stale_trial_callback() if retry else None
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not owned(trial.user_attrs.get(attrs.WORKER, {})):
            continue
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            if storage.set_trial_state_values(trial_id(trial), state=TrialState.FAIL):
                failed.append(storage.get_trial(trial_id(trial)))
                if callback is not None:
                    callback(study, failed[-1])
    return failed


def ask(study: optuna.Study) -> optuna.Trial:
    """``study.ask()``, the next queued trial first, for :func:`run_trial` to run.

    Optuna warns that heartbeats belong to ``study.optimize``; run_trial runs them as it does.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
        return study.ask()


def run_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    objective: Callable[[optuna.Trial], float],
    callbacks: tuple[TrialCallback, ...] = (),
) -> FrozenTrial:
    """Run ``objective`` on ``trial`` with heartbeats, store the outcome, call ``callbacks``.

    What ``study.optimize`` does for one trial, for a trial the worker has already claimed:
    pruned trials are PRUNED with their last value, an exception fails the trial (its reason
    is recorded by the objective), and Ctrl-C fails it before it propagates, never leaving
    it RUNNING. Inside a :func:`signals.deferred` block (the worker's), a stop cuts short
    only the objective; one requested before it starts fails the trial at once.
    """
    value, state = None, None
    try:
        with signals.allowed(), heartbeat(study, trial):
            value = objective(trial)
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    except DeviceFailedError:
        _tell(study, trial, None, TrialState.FAIL)  # the worker queues its retry and exits
        raise
    except Exception:
        state = TrialState.FAIL
    except KeyboardInterrupt:
        _tell(study, trial, None, TrialState.FAIL)
        raise
    frozen = _tell(study, trial, value, state)
    for callback in callbacks:
        callback(study, frozen)
    return frozen


def _tell(
    study: optuna.Study, trial: optuna.Trial, value: float | None, state: TrialState | None
) -> FrozenTrial:
    """Store the trial's outcome, unless another process has ended it meanwhile: a worker
    whose heartbeats stalled past the grace period (a frozen host, a suspended process) finds
    its trial failed as stale and its retry queued; the retry's result is the one that counts.
    """
    storage = study_storage(study)
    try:
        study.tell(trial, value, state=state)
    except (ValueError, optuna.exceptions.UpdateFinishedTrialError):  # "Cannot tell a FAIL trial"
        if not storage.get_trial(trial_id(trial)).state.is_finished():
            raise
        print(
            f"trial #{trial.number} was failed by another worker while it ran (no heartbeat for "
            "search.grace_seconds); its outcome is dropped and its queued retry runs instead",
            file=sys.stderr,
        )
    return storage.get_trial(trial_id(trial))


def leave_for_retry(study: optuna.Study, context: SearchContext) -> int | None:
    """Queue again the trial this worker was running when it was stopped; its number.

    A stop (Ctrl-C, SIGTERM from a launcher, Slurm's preemption, time limit or ``scancel``,
    a Kubernetes eviction) fails the running trial; its retry carries the trial's resume
    checkpoint, so whichever worker takes it next (a requeued task too) goes on from the
    last finished epoch, as for a worker that died (within ``search.max_retries``; past
    them, the checkpoint is removed).
    """
    mine = [
        trial
        for trial in study.get_trials(deepcopy=False)
        if context.worker.owns(trial.user_attrs.get(attrs.WORKER, {}))
    ]
    if not mine or max(mine, key=lambda trial: trial.number).state != TrialState.FAIL:
        return None
    last = max(mine, key=lambda trial: trial.number)
    before = len(study.get_trials(deepcopy=False))
    retry = study_storage(study).get_heartbeat_stale_trial_callback()
    if retry is not None:
        retry(study, last)
    if len(study.get_trials(deepcopy=False)) > before:
        return last.number
    recorded = last.user_attrs.get(attrs.RESUME)
    if recorded:  # no retry will read it
        with contextlib.suppress(ArtifactNotFound, FileNotFoundError):
            context.store.remove(recorded["artifact"])
    return None
