"""The search's progress: trials finished of the budget, by state, and the best so far.

A bar on a terminal, plain periodic lines in a log (see :mod:`tuner.progress`).
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.progress import Progress
from tuner.search import study as study_mod


class DataProgress:
    """Progress of building the data cache; it appears only when there is something to build."""

    def __init__(self) -> None:
        self._progress: Progress | None = None

    def __call__(self, done: int, total: int) -> None:
        if self._progress is None or self._progress.total != total:
            self.close()
            self._progress = Progress("preparing data", total, "images", rate_unit="img")
        self._progress.update(done)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None


class SearchProgress:
    """An Optuna callback that keeps one progress display for the whole study (all workers)."""

    def __init__(self, study: optuna.Study, budget: int) -> None:
        self._progress = Progress(f"search {study.study_name}", budget, "trials")
        self.refresh(study)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.refresh(study)

    def refresh(self, study: optuna.Study) -> None:
        """Update from the study itself, so other workers' and hosts' trials show too."""
        trials = study.get_trials(deepcopy=False)
        counts = {s: sum(t.state == s for t in trials) for s in TrialState}
        ranked = study_mod.ranked_trials(study)
        best = f"{ranked[0].value:.4f} (#{ranked[0].number})" if ranked else "-"
        self._progress.update(
            min(study_mod.finished_count(study), self._progress.total),
            breakdown=f"running {counts[TrialState.RUNNING]}, "
            f"complete {counts[TrialState.COMPLETE]}, pruned {counts[TrialState.PRUNED]}, "
            f"failed {counts[TrialState.FAIL]}",
            note=f"best {best}",
        )

    def write(self, line: str) -> None:
        """Print a line without breaking the bar."""
        self._progress.write(line)

    def close(self) -> None:
        self._progress.close()
