"""A search run's wall-clock budget (`tuner search --minutes`): when to stop starting trials.

The run's end is stored on the study, so every worker of it (local processes, `tuner worker`
on other hosts) reads the same one. A worker starts a trial only while the time left covers
that trial run to its end and then the run's own confirm (``search.confirm_top`` trials re-run
``search.confirm_seeds`` times, shared among the run's workers), both estimated from how long
the current top trials took: the confirm re-runs exactly those, and a trial that is not
pruned takes about as long.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import optuna

from tuner.search import attrs
from tuner.search import study as study_mod

CONFIRM_SHARE = 0.2
"""The most of a time budget the confirm may take: the replay showed it paying at 15% (6 full
trials of 40; bench/RESULTS.md "Replay"), not at the 40% it would take of a short budget."""


@dataclass(frozen=True)
class Deadline:
    """When the run must be over, and what of it the confirm needs."""

    ends_at: float  # seconds since the epoch
    minutes: float  # as asked, for messages
    workers: int  # the run's worker processes, among which the confirm runs are shared
    confirm_top: int
    confirm_seeds: int

    def confirm_top_that_fits(self, study: optuna.Study) -> int:
        """How many top trials the confirm can re-run in CONFIRM_SHARE of the budget: fewer
        than ``confirm_top`` when trials are long, and 0 when not even two fit (one candidate
        has no rival to be judged against), unless only one was asked for."""
        full = full_trial_seconds(study, self.confirm_top)
        if not self.confirm_top or not full:
            return self.confirm_top
        rounds = math.floor(CONFIRM_SHARE * 60 * self.minutes / full)
        top = min(self.confirm_top, rounds * self.workers // self.confirm_seeds)
        return top if top >= min(2, self.confirm_top) else 0

    def confirm_seconds(self, study: optuna.Study) -> float:
        """The confirm's wall time: its runs over the workers, each as long as a top trial
        took (0 before any trial completed: nothing to confirm yet)."""
        top = self.confirm_top_that_fits(study)
        runs = min(top, len(_top(study, top))) * self.confirm_seeds
        return full_trial_seconds(study, self.confirm_top) * math.ceil(runs / self.workers)

    def starts_allowed(self, study: optuna.Study, now: float | None = None) -> bool:
        """Whether a trial may start: the time left covers it and the confirm after it."""
        needed = full_trial_seconds(study, max(1, self.confirm_top)) + self.confirm_seconds(study)
        return self.left(now) > needed

    def left(self, now: float | None = None) -> float:
        return self.ends_at - (time.time() if now is None else now)


def store(study: optuna.Study, deadline: Deadline | None) -> None:
    """Set this run's deadline, or clear an earlier run's (a run without --minutes has none)."""
    if deadline is not None:
        study.set_user_attr(attrs.DEADLINE, asdict(deadline))
    elif attrs.DEADLINE in study.user_attrs:
        study.set_user_attr(attrs.DEADLINE, None)


def load(study: optuna.Study) -> Deadline | None:
    stored = study.user_attrs.get(attrs.DEADLINE)
    return Deadline(**stored) if stored else None


def starts_allowed(study: optuna.Study) -> bool:
    """No deadline, or time left before it for a trial and the confirm."""
    deadline = load(study)
    return deadline is None or deadline.starts_allowed(study)


def full_trial_seconds(study: optuna.Study, top: int) -> float:
    """How long a trial that is not pruned takes: the mean of the top trials' (0 before one)."""
    trials = _top(study, top)
    return sum(map(_seconds, trials)) / len(trials) if trials else 0.0


def _top(study: optuna.Study, top: int) -> list[optuna.trial.FrozenTrial]:
    return study_mod.ranked_trials(study)[:top]


def _seconds(trial: optuna.trial.FrozenTrial) -> float:
    """A trial's wall time (a retry that resumed ran only its own part: its epochs say all)."""
    if trial.datetime_start is None or trial.datetime_complete is None:
        return 0.0
    spent = (trial.datetime_complete - trial.datetime_start).total_seconds()
    epochs = trial.user_attrs.get(attrs.EPOCH_SECONDS) or []
    return max(spent, float(sum(epochs)))
