"""Confirm runs: the waiting re-runs of a confirm study, here or in local worker processes.

`tuner confirm` runs them on request; `tuner search` runs them itself once its budget is met
(``search.confirm_top``). What to re-run and how to judge it is decided in
:mod:`tuner.search.confirm`.
"""

from __future__ import annotations

from dataclasses import replace

from tuner.progress import Say
from tuner.run import signals
from tuner.run.driver import LOGS, SearchSession
from tuner.run.host import SearchContext
from tuner.run.launcher import Launcher, Slot
from tuner.run.objective import make_objective
from tuner.run.progress import SearchProgress
from tuner.run.workers import TrialCallback, WorkerOutcome, ask, run_trial
from tuner.search import confirm, deadline, notes
from tuner.search import study as study_mod
from tuner.search.storage import open_storage


def run_pending(
    linked: study_mod.PinnedStudy,
    context: SearchContext,
    callbacks: tuple[TrialCallback, ...] = (),
) -> None:
    """Run every waiting confirm run, one at a time; a failed run is left for a re-run."""
    objective = make_objective(context)
    noted = (*callbacks, notes.note_when_ended(context.config))
    while confirm.pending_runs(linked):
        with signals.deferred():  # the claimed run is run, never left RUNNING
            run_trial(linked.study, ask(linked.study), objective, noted)


def confirm_search(
    session: SearchSession, slots: list[Slot], outcome: WorkerOutcome, say: Say
) -> confirm.Confirmation | None:
    """The search's own confirm: its top ``search.confirm_top`` trials re-run on
    ``search.confirm_seeds`` fresh seeds each, on the search's workers, once its budget is met.

    A trial's value is its best epoch on the validation images, so the best value is partly
    luck; the mean over fresh seeds is not. None when it is off, or when the search stopped
    short of its budget other than at its time budget (a partial search is not judged), or
    when the time budget left too little for it. Re-running the search only runs the confirm
    runs that are missing.
    """
    parent, search = session.pinned, session.context.config.search  # this run's settings
    top, seeds = search.confirm_top, search.confirm_seeds
    ends_at = deadline.load(parent.study)
    timed_out = ends_at is not None and not ends_at.starts_allowed(parent.study)
    if not top or outcome.stopped_reason or (outcome.finished < outcome.budget and not timed_out):
        return None
    if not study_mod.ranked_trials(parent.study):
        return None
    if ends_at is not None:
        top = ends_at.confirm_top_that_fits(parent.study)
        if not top:
            say(
                f"\nno confirm: two top trials on {seeds} fresh seed(s) each would take more "
                f"than {deadline.CONFIRM_SHARE:.0%} of --minutes {ends_at.minutes:g}; "
                "export-best takes the best trial (`tuner confirm` runs them later)."
            )
            return None
        if ends_at.left() < ends_at.confirm_seconds(parent.study) / 2:
            say(
                f"\nno time left to confirm the top trials (--minutes {ends_at.minutes:g}): "
                "export-best takes the best trial; `tuner confirm` runs them later."
            )
            return None
    storage = open_storage(session.storage_url)
    confirm.plan(parent, confirm.open_linked(storage, parent), top, seeds)
    linked = study_mod.load_pinned(storage, study_mod.confirm_study_name(parent.study.study_name))
    pending = confirm.pending_runs(linked)
    if pending:
        say(
            f"\nconfirming: the top {top} trials re-run on {seeds} fresh seeds each "
            f"({pending} runs in study {linked.study.study_name!r}; search.confirm_top: 0 "
            "turns this off)"
        )
        _run_linked(linked, session, slots, say)
    return confirm.results(parent, linked)


def _run_linked(
    linked: study_mod.PinnedStudy, session: SearchSession, slots: list[Slot], say: Say
) -> None:
    """The confirm runs on the search's slots: here for one plain worker, else its processes."""
    if len(slots) == 1 and slots[0].gpu is None:
        progress = SearchProgress(linked.study, linked.config.search.trials)
        try:
            run_pending(linked, replace(session.context, config=linked.config), (progress,))
        finally:
            progress.close()
        return
    logs = LOGS / linked.study.study_name
    launcher = Launcher(linked.study, slots, session.storage_url, session.artifacts, logs, say)
    launcher.run(linked.config.search.max_consecutive_failures)
