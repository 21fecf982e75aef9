"""Refit trains a trial's recipe again with the seed the trial trained with, retries included.

A retried trial (its worker lost) has a number of its own but trains with the seed of the
trial it retries (its ``origin_trial``); refit must read the seed back the same way.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from tests.conftest import single_thread
from tuner.results.refit import refit
from tuner.run.objective import make_objective
from tuner.run.workers import run_trial, run_worker
from tuner.search import attrs
from tuner.search.optuna_internals import study_storage, trial_id


def _retried(make_context) -> tuple:
    """(pinned, context, retry): trial #0 trained and was failed as stale (its worker lost);
    trial #1, its retry, then trained and completed."""
    pinned, context = make_context("search.trials=1", "train.seed=7", "data.cache_dir=none")
    study, objective = pinned.study, make_objective(context)
    storage = study_storage(study)

    def lost_its_worker(trial: optuna.Trial) -> float:
        value = objective(trial)
        storage.set_trial_state_values(trial_id(trial), state=TrialState.FAIL)  # as a stale one
        storage.get_heartbeat_stale_trial_callback()(study, storage.get_trial(trial_id(trial)))
        return value

    run_trial(study, study.ask(), lost_its_worker)
    run_worker(study, context)
    retry = study.trials[1]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs[attrs.ORIGIN] == 0
    return pinned, context, retry


def _stored_without_seeds(study: optuna.Study, trial: FrozenTrial) -> FrozenTrial:
    """A copy of ``trial`` added to ``study`` without its recorded seeds, as older tuners left
    them: only the origin says which seed it trained with."""
    seeds = (attrs.SEED, attrs.INIT_SEED)
    study.add_trial(
        optuna.trial.create_trial(
            params=trial.params,
            distributions=trial.distributions,
            value=trial.value,
            intermediate_values=trial.intermediate_values,
            user_attrs={k: v for k, v in trial.user_attrs.items() if k not in seeds},
        )
    )
    return study.trials[-1]


def test_a_retried_trials_refit_trains_with_the_seed_its_trial_did(make_context) -> None:
    with single_thread():
        pinned, context, retry = _retried(make_context)
        original = pinned.study.trials[0]
        assert retry.user_attrs[attrs.SEED] == original.user_attrs[attrs.SEED] == 7 + 0
        _, done = refit(pinned, retry, context.data, "cpu", lambda line: None)
        assert done.seed == 7

        # the same trial as a tuner that recorded no seed stored it: the same seed is derived
        old = _stored_without_seeds(pinned.study, retry)
        assert old.number != retry.number and attrs.SEED not in old.user_attrs
        _, done = refit(pinned, old, context.data, "cpu", lambda line: None)
        assert done.seed == 7  # its origin's, not 7 + its own number


def test_the_seed_a_trial_trains_with_is_recorded_else_derived_from_its_origin() -> None:
    assert attrs.train_seed({attrs.SEED: 123, attrs.ORIGIN: 4}, 7, number=9) == 123
    assert attrs.train_seed({attrs.ORIGIN: 4}, 7, number=9) == 11  # a retry of trial #4
    assert attrs.train_seed({}, 7, number=9) == 16  # its own origin
