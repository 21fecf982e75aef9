"""The study as single source of truth: the pinned config, sampler, pruner, budget, retries.

Whoever creates a study stores its full resolved config, the resolved weights and the
data fingerprint in the study's user attributes; everyone after that reads them back
and refuses to run anything else.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
import zlib
from dataclasses import dataclass, replace

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner import config as config_mod
from tuner.config import PinnedWeights, SearchConfig, StudyConfig
from tuner.errors import TunerError
from tuner.search import attrs
from tuner.search.optuna_internals import set_heartbeat
from tuner.search.pruners import make_pruner
from tuner.search.storage import ArtifactStore

CONFIRM_SUFFIX = "-confirm"

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
ENDED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def worker_seed(study_seed: int, study_name: str, worker: str | None) -> int:
    """The sampler seed of one worker, derived from the study's seed, its name and the worker id.

    Workers seeded alike would draw the same random start-up points; so would two studies with
    the same ``search.seed``, and a study warm-started from another would re-draw the very
    recipe it just replayed. Derived seeds keep each worker of each study reproducible.
    """
    parts = [study_seed, zlib.crc32(study_name.encode())]
    if worker is not None:
        parts.append(zlib.crc32(worker.encode()))
    return int(np.random.SeedSequence(parts).generate_state(1, dtype=np.uint32)[0])


def make_sampler(
    search: SearchConfig, study_name: str, worker: str | None = None
) -> optuna.samplers.BaseSampler:
    """Seeded multivariate TPE with constant liar (parallel workers don't pile on one point)."""
    seed = worker_seed(search.seed, study_name, worker)
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        # `group` is experimental in Optuna 5, and the conditional space needs it.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=8
        )


@dataclass(frozen=True)
class PinnedStudy:
    """A study together with what it pins: config, weights and data fingerprint."""

    study: optuna.Study
    config: StudyConfig
    weights: PinnedWeights
    fingerprint: str


def study_exists(storage: optuna.storages.BaseStorage, name: str) -> bool:
    return name in optuna.get_all_study_names(storage)


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return optuna.get_all_study_names(storage)


def confirm_study_name(parent: str) -> str:
    """The study `tuner confirm` keeps its re-runs of ``parent``'s top trials in."""
    return parent + CONFIRM_SUFFIX


def only_study(storage: optuna.storages.BaseStorage, required: bool) -> str | None:
    """The storage's one study when --study is not given; an error (or None) when ambiguous.

    A study's confirm study does not make the choice ambiguous: it belongs to its parent.
    """
    every = study_names(storage)
    names = [
        n for n in every if not (n.endswith(CONFIRM_SUFFIX) and n[: -len(CONFIRM_SUFFIX)] in every)
    ]
    if len(names) == 1:
        return names[0]
    if not required:
        return None
    if not names:
        raise TunerError("this storage has no study yet. Run `tuner search` first.")
    raise TunerError(
        f"this storage has several studies ({', '.join(names)}); pick one with --study NAME."
    )


def watch_trials(storage: optuna.storages.BaseStorage, search: SearchConfig) -> None:
    """Heartbeats on: a trial whose worker died is failed after the grace period and retried.

    The retry is a new trial with the same parameters and user attributes (among them the
    resume checkpoint), run by the next worker that asks for a trial. The settings live in
    the study config, so every worker of a study watches its trials alike.
    """
    if not isinstance(storage, optuna.storages.RDBStorage):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = _UnownedRetry(max_retry=search.max_retries)
    set_heartbeat(storage, search.heartbeat_seconds, search.grace_seconds, retry)


class _UnownedRetry(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a failed trial, without the dead worker's ``worker`` attribute.

    A retry belongs to no worker until one runs it; carrying the dead one's pid, it would be
    taken for the dead worker's own trial (and failed again) in the moment between a worker
    claiming it and recording itself as its owner.
    """

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        unowned = copy.copy(trial)
        unowned.user_attrs = {k: v for k, v in trial.user_attrs.items() if k != attrs.WORKER}
        super().__call__(study, unowned)


def load_pinned(
    storage: optuna.storages.BaseStorage, name: str, worker: str | None = None
) -> PinnedStudy:
    """Load a study made by tuner, with its sampler and pruner rebuilt from the stored config.

    ``worker`` names the worker that will run trials (its sampler seed derives from it).
    """
    if not study_exists(storage, name):
        known = ", ".join(study_names(storage)) or "none"
        raise TunerError(f"study {name!r} is not in this storage (studies there: {known}).")
    plain = optuna.load_study(study_name=name, storage=storage)
    stored = plain.user_attrs
    if attrs.CONFIG not in stored:
        raise TunerError(f"study {name!r} was not made by tuner (it has no stored config).")
    config = config_mod.from_stored(stored[attrs.CONFIG])
    watch_trials(storage, config.search)
    study = optuna.load_study(
        study_name=name,
        storage=storage,
        sampler=make_sampler(config.search, name, worker),
        pruner=make_pruner(config.search, config.train.epochs),
    )
    weights = PinnedWeights.from_dict(stored[attrs.WEIGHTS], config.space.arch)
    return PinnedStudy(study, config, weights, stored[attrs.FINGERPRINT])


def check_same_config(pinned: PinnedStudy, config: StudyConfig) -> None:
    """Refuse to mix runs: a study reused with a different config is an error listing the keys."""
    differences = config_mod.identity_differences(pinned.config, config)
    if differences:
        listed = "\n  ".join(differences)
        raise TunerError(
            f"study {pinned.study.study_name!r} exists with a different config:\n  {listed}\n"
            "Use the same config, or another study name (--study NAME or --set search.study=NAME)."
        )


def create_pinned(
    storage: optuna.storages.BaseStorage,
    config: StudyConfig,
    weights: PinnedWeights,
    fingerprint: str,
) -> PinnedStudy:
    """Create the study and pin config, weights and data fingerprint into it."""
    watch_trials(storage, config.search)
    study = optuna.create_study(
        study_name=config.search.study,
        storage=storage,
        direction="maximize",
        sampler=make_sampler(config.search, config.search.study),
        pruner=make_pruner(config.search, config.train.epochs),
    )
    with warnings.catch_warnings():  # experimental since Optuna 3.2, unchanged since
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([attrs.OBJECTIVE])  # optuna-dashboard shows it, not "Objective 0"
    study.set_user_attr(attrs.CONFIG, config_mod.to_dict(config))
    study.set_user_attr(attrs.WEIGHTS, weights.to_dict())
    study.set_user_attr(attrs.FINGERPRINT, fingerprint)
    return PinnedStudy(study, config, weights, fingerprint)


def set_budget(pinned: PinnedStudy, trials: int) -> PinnedStudy:
    """Store a new budget, so that every worker, here or on another host, stops at it."""
    if trials == pinned.config.search.trials:
        return pinned
    return store_search(pinned, replace(pinned.config.search, trials=trials))


def store_search(pinned: PinnedStudy, search: SearchConfig) -> PinnedStudy:
    """Store new search settings (the budget and what it keeps), read by every worker."""
    config = replace(pinned.config, search=search)
    pinned.study.set_user_attr(attrs.CONFIG, config_mod.to_dict(config))
    return replace(pinned, config=config)


def stored_budget(study: optuna.Study) -> int:
    """The budget as stored now: `tuner search --trials N` may raise it while workers run."""
    return int(study.user_attrs[attrs.CONFIG]["search"]["trials"])


def failure_streak(study: optuna.Study, limit: int, since: int = 0) -> str | None:
    """Why to stop, when the study's last ``limit`` ended trials all failed; else None.

    Counted over the whole study, not per worker, so that a problem every trial hits (out
    of memory, a bad path) stops all workers on all hosts after a bounded number of trials.
    Only trials numbered ``since`` or later count (a re-run after a fix starts afresh).
    """
    trials = study.get_trials(deepcopy=False, states=ENDED)
    ended = sorted((t for t in trials if t.number >= since), key=lambda t: t.number)
    last = ended[-limit:]
    if len(last) < limit or any(t.state != TrialState.FAIL for t in last):
        return None
    why = last[-1].user_attrs.get(attrs.FAIL_REASON, "its worker died or lost the storage")
    return f"{limit} trials failed in a row; the last one (#{last[-1].number}): {why}"


def finished_count(study: optuna.Study) -> int:
    """Trials that count towards the budget: complete and pruned."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def budget_met(study: optuna.Study) -> bool:
    return finished_count(study) >= stored_budget(study)


def has_room(study: optuna.Study, before: int | None = None) -> bool:
    """Whether the finished trials and those in flight leave room in the budget for one more.

    ``before``: the number of a trial just claimed; only the trials in flight numbered below
    it count, so of two workers that claimed a trial at once the earlier one keeps it.
    """
    trials = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
    taken = [
        t for t in trials if t.state != TrialState.RUNNING or before is None or t.number < before
    ]
    return len(taken) < stored_budget(study)


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the running trials whose worker stopped sending heartbeats; their retries queue.

    Optuna does this only when a worker starts a trial; a worker that waits on the trials in
    flight must do it too, or a dead worker's trial would hold its place forever.
    """
    with warnings.catch_warnings():  # experimental since Optuna 2.9, unchanged since
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def ranked_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials, best first; ties go to the earlier trial, which got there first."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(complete, key=lambda t: (-(t.value or 0.0), t.number))


def checkpoint_removed(study: optuna.Study, trial: FrozenTrial) -> bool:
    return bool(study.user_attrs.get(f"{attrs.CHECKPOINT_REMOVED_PREFIX}{trial.number}"))


def has_checkpoint(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Whether the trial saved a checkpoint that the search has not evicted since."""
    return attrs.CHECKPOINT in trial.user_attrs and not checkpoint_removed(study, trial)


def evict_checkpoints(study: optuna.Study, store: ArtifactStore, keep: int) -> list[FrozenTrial]:
    """Remove the checkpoints of every complete trial outside the top ``keep``; returns them.

    A finished trial's attributes are read-only, so the removal is recorded on the study,
    one key per trial so that concurrent workers never overwrite each other.
    """
    removed = []
    for trial in ranked_trials(study)[keep:]:
        artifact_id = trial.user_attrs.get(attrs.CHECKPOINT)
        if artifact_id and not checkpoint_removed(study, trial):
            with contextlib.suppress(optuna.artifacts.exceptions.ArtifactNotFound):
                store.remove(artifact_id)
            study.set_user_attr(f"{attrs.CHECKPOINT_REMOVED_PREFIX}{trial.number}", True)
            removed.append(trial)
    return removed
