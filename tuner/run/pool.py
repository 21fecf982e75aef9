"""One pool worker: between trials it picks the next queued study, readies this host for it,
and runs one of its trials exactly as that study's own worker would.

The study holds everything a worker needs (config, weights, data fingerprint), so a worker
can serve any study in the storage. It keeps a study's data mapped and its model checked while
it stays on that study, and lets them go before it readies another, so a device never holds
two studies' resident data. The exact budget, retries and resume from checkpoints are the
study's own worker's (:mod:`tuner.run.workers`); a study this host cannot load is reported
once (in the log and on the study, for ``tuner queue``) and skipped, and one whose trials keep
failing is paused with the reason, while the other studies go on.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import DeviceFailedError, TunerError
from tuner.progress import Say
from tuner.run import signals
from tuner.run.device_memory import hand_back
from tuner.run.host import SearchContext
from tuner.run.identity import WorkerIdentity
from tuner.run.objective import make_objective
from tuner.run.workers import JoinRequest, claim_trial, join, leave_for_retry, run_trial
from tuner.search import notes, queue
from tuner.search import study as study_mod
from tuner.search.storage import open_storage

WAIT_SECONDS = 2.0
"""How often an idle pool worker looks at the queue again."""


@dataclass(frozen=True)
class PoolRequest:
    """What one pool worker is told: the storage it serves and what this host decides."""

    storage_url: str
    artifacts: str
    worker: WorkerIdentity
    device: str | None = None  # overrides every study's train.device on this host
    idle_exit_seconds: float | None = None  # None: serve until stopped


@dataclass
class _Serving:
    """The study this worker is on, readied once and kept while it stays on it."""

    study: optuna.Study
    context: SearchContext
    objective: Callable[[optuna.Trial], float]
    since: int  # trials before this worker joined it do not count towards a failure streak

    @property
    def name(self) -> str:
        return self.study.study_name


def serve(request: PoolRequest, say: Say) -> int:
    """Run queued studies' trials until idle for ``idle_exit_seconds``; the trials it ran.

    Ctrl-C or SIGTERM fails the running trial and queues its retry, which resumes from its
    last epoch checkpoint in whichever worker takes it next (this pool restarted, or another).
    """
    storage = open_storage(request.storage_url, must_exist=False)
    me = f"pool worker {request.worker.name}"
    serving: _Serving | None = None
    cannot: set[str] = set()  # studies this host cannot load: reported once, then skipped
    ran, idle_since = 0, time.monotonic()
    while True:
        choice = queue.next_study(queue.queued_studies(storage), skip=cannot)
        if serving is not None and (choice is None or choice.name != serving.name):
            device, serving = serving.context.device, None  # one study's data at a time
            gc.collect()
            hand_back(device)
        if choice is None:
            idle = time.monotonic() - idle_since
            if request.idle_exit_seconds is not None and idle >= request.idle_exit_seconds:
                say(f"{me}: idle for {idle / 60:.1f} min, no queued study has work; exiting")
                return ran
            time.sleep(WAIT_SECONDS)
            continue
        if serving is None:
            try:
                serving = _ready(request, choice.name)
            except TunerError as exc:
                cannot.add(choice.name)
                queue.refuse_on_host(
                    optuna.load_study(study_name=choice.name, storage=storage),
                    request.worker.host, str(exc),
                )  # fmt: skip
                say(f"{me}: skipping study {choice.name!r}, this host cannot serve it: {exc}")
                continue
            placement = serving.context.placement
            data = placement.describe() if placement is not None else "resident"
            say(f"{me}: serving study {choice.name!r} on {serving.context.device}, data {data}")
        done = _one_trial(serving, me, say)
        if done is None:  # another worker took the study's last place meanwhile
            time.sleep(WAIT_SECONDS / 4)
            continue
        ran, idle_since = ran + 1, time.monotonic()
        if done.state == TrialState.FAIL:
            _pause_on_failures(serving, storage, me, say)


def _one_trial(serving: _Serving, me: str, say: Say) -> FrozenTrial | None:
    """Claim and run one trial of the served study within its budget; None if none is free."""
    study, ended = serving.study, (notes.note_when_ended(serving.context.config),)
    try:
        with signals.deferred():  # a claimed trial is run or put back, never left RUNNING
            trial = claim_trial(study)
            if trial is None:
                return None
            say(f"{me}: study {serving.name!r} trial #{trial.number} started")
            done = run_trial(study, trial, serving.objective, ended)
    except (KeyboardInterrupt, DeviceFailedError):
        retried = leave_for_retry(study, serving.context)
        if retried is not None:
            say(f"{me}: stopped; study {serving.name!r} trial #{retried} queued to resume")
        raise
    value = "" if done.value is None else f", val accuracy {done.value:.4f}"
    say(f"{me}: study {serving.name!r} trial #{done.number} {done.state.name.lower()}{value}")
    return done


def _ready(request: PoolRequest, name: str) -> _Serving:
    """Join ``name`` on this host: its config, weights and data checked, as `tuner worker` does."""
    join_request = JoinRequest(
        name, request.storage_url, request.artifacts, request.worker, request.device
    )
    pinned, context = join(join_request)
    since = len(pinned.study.get_trials(deepcopy=False))
    return _Serving(pinned.study, context, make_objective(context), since)


def _pause_on_failures(
    serving: _Serving, storage: optuna.storages.BaseStorage, me: str, say: Say
) -> None:
    """Pause a study whose last trials all failed (a bad path, out of memory): no worker of any
    pool starts its trials again until ``tuner queue resume``."""
    limit = serving.context.config.search.max_consecutive_failures
    reason = study_mod.failure_streak(serving.study, limit, since=serving.since)
    if reason is not None:
        queue.change(storage, serving.name, queue.PAUSED, reason=reason)
        say(f"{me}: paused study {serving.name!r}: {reason}")
