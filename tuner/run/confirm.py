"""`tuner confirm`'s re-runs: the waiting runs of a confirm study, trained one at a time.

What to re-run and how to judge it is decided in :mod:`tuner.search.confirm`.
"""

from __future__ import annotations

from tuner.run import signals
from tuner.run.host import SearchContext
from tuner.run.objective import make_objective
from tuner.run.workers import TrialCallback, ask, run_trial
from tuner.search import notes
from tuner.search import study as study_mod
from tuner.search.confirm import pending_runs


def run_pending(
    linked: study_mod.PinnedStudy,
    context: SearchContext,
    callbacks: tuple[TrialCallback, ...] = (),
) -> None:
    """Run every waiting confirm run, one at a time; a failed run is left for a re-run."""
    objective = make_objective(context)
    noted = (*callbacks, notes.note_when_ended(context.config))
    while pending_runs(linked):
        with signals.deferred():  # the claimed run is run, never left RUNNING
            run_trial(linked.study, ask(linked.study), objective, noted)
