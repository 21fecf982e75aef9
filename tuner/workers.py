"""The worker loop: run trials until the study's budget is met or failures say stop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner import study as study_mod
from tuner.objective import SearchContext, make_objective
from tuner.signals import raise_if_stop_requested

TrialCallback = Callable[[optuna.Study, FrozenTrial], None]


@dataclass(frozen=True)
class WorkerOutcome:
    """Why a worker stopped, for the summary."""

    finished: int
    budget: int
    stopped_reason: str | None


def run_worker(
    study: optuna.Study,
    context: SearchContext,
    budget: int,
    callbacks: tuple[TrialCallback, ...] = (),
) -> WorkerOutcome:
    """Run trials until ``budget`` trials are finished (complete + pruned) in the study.

    The budget counts the whole study, so a re-run after an interruption only runs what
    is missing. Failed trials don't count; after ``search.max_consecutive_failures`` of
    them in a row the worker stops with the last failure's reason instead of looping.
    """
    limit = context.config.search.max_consecutive_failures
    state = {"failures": 0, "reason": None}

    def stop_when_done(study: optuna.Study, trial: FrozenTrial) -> None:
        raise_if_stop_requested()
        if trial.state == TrialState.FAIL:
            state["failures"] += 1
            if state["failures"] >= limit:
                why = trial.user_attrs.get("fail_reason", "unknown error")
                state["reason"] = f"{limit} trials failed in a row; the last one: {why}"
                study.stop()
        else:
            state["failures"] = 0
        if study_mod.finished_count(study) >= budget:
            study.stop()

    if study_mod.finished_count(study) < budget:
        study.optimize(
            make_objective(context),
            callbacks=[*callbacks, stop_when_done],
            catch=(Exception,),
        )
    return WorkerOutcome(study_mod.finished_count(study), budget, state["reason"])
