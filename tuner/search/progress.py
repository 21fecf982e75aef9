"""The search's progress bar: trials finished of the budget, by state, and the best so far."""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from tuner.search import study as study_mod


class DataProgress:
    """A bar for building the data cache; it appears only when there is something to build."""

    def __init__(self) -> None:
        self._bar: tqdm | None = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None or self._bar.total != total:
            self.close()
            self._bar = tqdm(total=total, unit="img", dynamic_ncols=True, desc="preparing data")
        self._bar.n = done
        self._bar.refresh()
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class SearchProgress:
    """An Optuna callback that keeps one bar for the whole study (all workers' trials)."""

    def __init__(self, study: optuna.Study, budget: int) -> None:
        self._bar = tqdm(total=budget, unit="trial", dynamic_ncols=True, desc=study.study_name)
        self.refresh(study)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.refresh(study)

    def refresh(self, study: optuna.Study) -> None:
        """Redraw from the study itself, so other workers' and hosts' trials show too."""
        trials = study.get_trials(deepcopy=False)
        counts = {s: sum(t.state == s for t in trials) for s in TrialState}
        self._bar.n = min(study_mod.finished_count(study), self._bar.total)
        ranked = study_mod.ranked_trials(study)
        best = f"{ranked[0].value:.4f} (#{ranked[0].number})" if ranked else "-"
        self._bar.set_postfix_str(
            f"running {counts[TrialState.RUNNING]} done {counts[TrialState.COMPLETE]} "
            f"pruned {counts[TrialState.PRUNED]} failed {counts[TrialState.FAIL]} best {best}"
        )

    def write(self, line: str) -> None:
        """Print a line above the bar without breaking it."""
        self._bar.write(line)

    def close(self) -> None:
        self._bar.close()
