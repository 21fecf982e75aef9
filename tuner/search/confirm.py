"""`tuner confirm`: re-train the top trials with fresh seeds, to tell a winner from a lucky seed.

The re-runs are trials of a linked study, ``<study>-confirm``, in the same storage: it pins
the parent's config (pruner off), so its runs keep checkpoints, curves and heartbeats like
any trial, and the dashboard shows them. Each run is enqueued with its candidate's params,
the candidate's trial number and a seed derived from (study seed, candidate, seed index),
which draws its starting model and orders its training;
re-running the command only runs what is missing.
"""

from __future__ import annotations

import statistics
import zlib
from dataclasses import dataclass, replace

import numpy as np
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from tuner import stats
from tuner.config import SearchConfig
from tuner.errors import TunerError
from tuner.recipe import describe_schedule
from tuner.search import attrs
from tuner.search import study as study_mod

_PENDING = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)


def confirm_seed(study_seed: int, candidate: int, seed_index: int, trained: int) -> int:
    """A fresh training seed: stable for (study, candidate, index), never ``trained``.

    ``trained`` is the seed the candidate trained with in the search (:func:`attrs.train_seed`).
    These come from another stream (tagged "confirm"), and a draw that happens to equal it
    takes the next number, so a re-run is never the original run again.
    """
    tag = zlib.crc32(b"confirm")
    sequence = np.random.SeedSequence([study_seed, tag, candidate, seed_index])
    seed = int(sequence.generate_state(1)[0] % (2**31 - 1))
    return seed if seed != trained else (seed + 1) % (2**31 - 1)


@dataclass(frozen=True)
class CandidateResult:
    """One candidate: the original trial's value and its confirm runs' values."""

    trial: int
    schedule: str
    original: float
    values: tuple[float, ...]  # complete confirm runs, by seed index
    correct: tuple[np.ndarray, ...] = ()  # each run's validation images right, where recorded

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0


@dataclass(frozen=True)
class Confirmation:
    """All candidates of the last request, best mean first (candidates with no run last)."""

    parent: str
    seeds: int
    results: tuple[CandidateResult, ...]

    @property
    def winner(self) -> CandidateResult | None:
        return self.results[0] if self.results and self.results[0].values else None

    @property
    def missing(self) -> int:
        """Runs of the request that have not completed (yet)."""
        return len(self.results) * self.seeds - sum(len(r.values) for r in self.results)

    @property
    def complete(self) -> bool:
        return bool(self.results) and self.missing == 0

    def verdict(self) -> str:
        """One line: is the winner's lead over the runner-up beyond noise?

        Noise is both the validation images' and the seeds': a bootstrap that resamples the
        images and each candidate's runs (:func:`tuner.stats.compare_seeds`).
        """
        ranked = [r for r in self.results if r.values]
        if not ranked:
            return "no confirm run has completed yet."
        winner = ranked[0]
        if len(ranked) == 1:
            return f"trial #{winner.trial}: mean {winner.mean:.4f} over {len(winner.values)} seeds."
        runner = ranked[1]
        lead = f"trial #{winner.trial} leads trial #{runner.trial} by " + (
            f"{100 * (winner.mean - runner.mean):.1f} points (mean over seeds"
        )
        if len(winner.correct) != len(winner.values) or len(runner.correct) != len(runner.values):
            return f"{lead}); no per-image results recorded: significance unknown."
        found = stats.compare_seeds(np.stack(winner.correct), np.stack(runner.correct))
        if found.significant:
            return f"{lead}; {found.evidence()}): a real winner."
        return (
            f"{lead}; {found.evidence()}): they are not distinguishable; more seeds (--seeds) "
            "would tell."
        )


def describe(search: SearchConfig) -> str:
    """The search's own confirm in words, for its header."""
    top, seeds = search.confirm_top, search.confirm_seeds
    if not top:
        return "off (search.confirm_top: 0): export-best takes the trial with the best value"
    return (
        f"once the {search.trials} trials are done, the top {top} re-run on {seeds} fresh "
        f"seed(s) each ({top * seeds} full runs more); the best mean is handed back"
    )


def left_to_the_user(study: str, storage: str = "") -> str:
    """For searches whose trials only workers run (a pool, a Slurm array): no process of
    theirs outlives the search to confirm it, so the user runs the confirm."""
    return (
        f"Workers run no confirm runs: once the study has finished, run `tuner confirm --study "
        f"{study}{storage}` to re-run its top trials on fresh seeds."
    )


def open_linked(storage: BaseStorage, parent: study_mod.PinnedStudy) -> study_mod.PinnedStudy:
    """The parent's confirm study, created on first use with the parent's config, pruner off."""
    name = study_mod.confirm_study_name(parent.study.study_name)
    if study_mod.study_exists(storage, name):
        return study_mod.load_pinned(storage, name)
    search = replace(
        parent.config.search, study=name, pruner="none", baselines=False, trials=0, confirm_top=0
    )
    linked = study_mod.create_pinned(
        storage, replace(parent.config, search=search), parent.weights, parent.fingerprint
    )
    linked.study.set_user_attr(attrs.PARENT_STUDY, parent.study.study_name)
    return linked


def plan(parent: study_mod.PinnedStudy, linked: study_mod.PinnedStudy, top: int, seeds: int) -> int:
    """Enqueue the runs the request needs and the confirm study lacks; returns how many."""
    if top < 1 or seeds < 1:
        raise TunerError("--top and --seeds must be at least 1.")
    candidates = study_mod.ranked_trials(parent.study)[:top]
    if not candidates:
        raise TunerError(
            f"study {parent.study.study_name!r} has no complete trial to confirm yet. "
            "Run `tuner search` first."
        )
    have = {
        (t.user_attrs.get(attrs.CONFIRMS), t.user_attrs.get(attrs.SEED_INDEX))
        for t in linked.study.get_trials(deepcopy=False, states=_PENDING)
    }
    added = 0
    for candidate in candidates:
        trained = attrs.train_seed(candidate.user_attrs, parent.config.train.seed, candidate.number)
        for index in range(seeds):
            if (candidate.number, index) in have:
                continue
            seed = confirm_seed(parent.config.train.seed, candidate.number, index, trained)
            linked.study.enqueue_trial(
                candidate.params,
                user_attrs={
                    attrs.CONFIRMS: candidate.number,
                    attrs.SEED_INDEX: index,
                    attrs.SEED: seed,
                    attrs.INIT_SEED: seed,  # a fresh start too: a lucky start is luck as well
                },
            )
            added += 1
    request = {"candidates": [c.number for c in candidates], "seeds": seeds}
    linked.study.set_user_attr(attrs.CONFIRM_REQUEST, request)
    runs = len(candidates) * seeds
    keep = max(runs, linked.config.search.keep_checkpoints)  # any run may be the one shipped
    study_mod.store_search(
        linked, replace(linked.config.search, trials=runs, keep_checkpoints=keep)
    )
    return added


def pending_runs(linked: study_mod.PinnedStudy) -> int:
    return len(linked.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def results(parent: study_mod.PinnedStudy, linked: study_mod.PinnedStudy) -> Confirmation:
    """The last request's candidates with their runs' values, best mean first."""
    request = linked.study.user_attrs.get(attrs.CONFIRM_REQUEST)
    if not request:
        return Confirmation(parent.study.study_name, 0, ())
    runs: dict[int, dict[int, FrozenTrial]] = {}
    for trial in linked.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        index = trial.user_attrs[attrs.SEED_INDEX]
        if index < request["seeds"]:
            runs.setdefault(trial.user_attrs[attrs.CONFIRMS], {})[index] = trial
    epochs = parent.config.train.epochs
    found = []
    for number in request["candidates"]:
        original = parent.study.trials[number]
        params = attrs.trial_params(original, parent.config.space)
        done = [run for _, run in sorted(runs.get(number, {}).items())]
        correct = tuple(c for c in map(attrs.val_correct, done) if c is not None)
        found.append(
            CandidateResult(
                number,
                describe_schedule(params, epochs),
                original.value,
                tuple(run.value for run in done),
                correct,
            )
        )
    found.sort(key=lambda r: (not r.values, -(r.mean if r.values else 0.0), r.trial))
    return Confirmation(parent.study.study_name, request["seeds"], tuple(found))


def load(
    storage: BaseStorage, parent: study_mod.PinnedStudy
) -> tuple[study_mod.PinnedStudy, Confirmation]:
    """The confirm study and its results, or a TunerError saying to run `tuner confirm`."""
    name = study_mod.confirm_study_name(parent.study.study_name)
    if not study_mod.study_exists(storage, name):
        raise TunerError(
            f"study {parent.study.study_name!r} has not been confirmed yet. "
            f"Run `tuner confirm --study {parent.study.study_name}` first."
        )
    linked = study_mod.load_pinned(storage, name)
    confirmation = results(parent, linked)
    if confirmation.winner is None:
        raise TunerError(
            f"study {name!r} has no complete confirm run yet. Run `tuner confirm` to finish it."
        )
    return linked, confirmation


def winner_runs(
    parent: study_mod.PinnedStudy, linked: study_mod.PinnedStudy, candidate: int
) -> list[tuple[study_mod.PinnedStudy, FrozenTrial]]:
    """The winner's runs (the original and its confirm runs), best value first."""
    runs = [(parent, parent.study.trials[candidate])]
    runs += [
        (linked, t)
        for t in linked.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get(attrs.CONFIRMS) == candidate
    ]
    return sorted(runs, key=lambda run: -(run[1].value or 0.0))


@dataclass(frozen=True)
class ConfirmedExport:
    """What `export-best --confirmed` ships: the winner's run nearest its mean best epoch."""

    pinned: study_mod.PinnedStudy  # the parent study or its confirm study
    trial: int
    summary: dict[str, object]  # written to metrics.json and the model card


def confirmed_export(storage: BaseStorage, parent: study_mod.PinnedStudy) -> ConfirmedExport:
    """The winner by mean over fresh seeds, and which of its runs' weights to export."""
    linked, confirmation = load(storage, parent)
    return _export_of(parent, linked, confirmation)


def default_export(storage: BaseStorage, parent: study_mod.PinnedStudy) -> ConfirmedExport | None:
    """What `tuner export-best` takes when told no trial: the confirmed winner, where the
    confirm study has every run of its request and confirmed the search's current top trials
    (a search continued since has newer ones: then None, as with no confirmation at all)."""
    name = study_mod.confirm_study_name(parent.study.study_name)
    if not study_mod.study_exists(storage, name):
        return None
    linked = study_mod.load_pinned(storage, name)
    confirmation = results(parent, linked)
    top = study_mod.ranked_trials(parent.study)[: len(confirmation.results)]
    if not confirmation.complete or {r.trial for r in confirmation.results} != {
        t.number for t in top
    }:
        return None
    try:
        return _export_of(parent, linked, confirmation)
    except TunerError:  # no run of the winner kept its weights: the search's best it is
        return None


def _export_of(
    parent: study_mod.PinnedStudy, linked: study_mod.PinnedStudy, confirmation: Confirmation
) -> ConfirmedExport:
    winner = confirmation.winner
    assert winner is not None  # callers refuse a confirmation without one
    runs = winner_runs(parent, linked, winner.trial)
    target = mean_curve_best_epoch([trial for _, trial in runs])
    kept = [run for run in runs if study_mod.has_checkpoint(run[0].study, run[1])]
    if not kept:
        raise TunerError(
            f"no run of the winner (trial #{winner.trial}) kept its checkpoint "
            "(search.keep_checkpoints). Raise it and run `tuner confirm` with more --seeds."
        )
    pinned, trial = nearest_epoch_run(kept, target)
    summary = {
        "candidate_trial": winner.trial,
        "study": parent.study.study_name,
        "original_val_accuracy": winner.original,
        "seed_val_accuracies": list(winner.values),
        "mean": winner.mean,
        "std": winner.std,
        "verdict": confirmation.verdict(),
        "mean_curve_best_epoch": target,
        "exported_run": {
            "study": pinned.study.study_name,
            "trial": trial.number,
            "best_epoch": trial.user_attrs.get(attrs.BEST_EPOCH),
        },
    }
    return ConfirmedExport(pinned, trial.number, summary)


def mean_curve_best_epoch(runs: list[FrozenTrial]) -> int:
    """The epoch at which the runs' mean validation curve peaks: the winner's best epoch on
    average over its seeds, not on one seed's noisy curve."""
    curves = [
        run.user_attrs[attrs.VAL_ACCURACY] for run in runs if run.user_attrs.get(attrs.VAL_ACCURACY)
    ]
    length = min(map(len, curves))
    return int(np.argmax(np.mean([curve[:length] for curve in curves], axis=0)))


def nearest_epoch_run(
    runs: list[tuple[study_mod.PinnedStudy, FrozenTrial]], target: int
) -> tuple[study_mod.PinnedStudy, FrozenTrial]:
    """The run whose checkpoint (its own best epoch) is nearest ``target``; the higher value
    among equals. Shipping the winner's best run instead would ship its luckiest epoch, the
    winner's curse the confirm is there to avoid: in the replay that gave back what the confirm
    gained (bench/RESULTS.md, "Replay")."""
    return min(
        runs,
        key=lambda run: (
            abs(int(run[1].user_attrs.get(attrs.BEST_EPOCH, target)) - target),
            -(run[1].value or 0.0),
            run[1].number,
        ),
    )
