"""The search's progress bar: trials finished of the budget, by state, and the best so far."""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from tuner import study as study_mod


class SearchProgress:
    """An Optuna callback that keeps one bar for the whole study (all workers' trials)."""

    def __init__(self, study: optuna.Study, budget: int) -> None:
        self._bar = tqdm(total=budget, unit="trial", dynamic_ncols=True, desc=study.study_name)
        self._refresh(study)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._refresh(study)

    def _refresh(self, study: optuna.Study) -> None:
        trials = study.get_trials(deepcopy=False)
        counts = {s: sum(t.state == s for t in trials) for s in TrialState}
        self._bar.n = min(study_mod.finished_count(study), self._bar.total)
        ranked = study_mod.ranked_trials(study)
        best = f"{ranked[0].value:.4f} (#{ranked[0].number})" if ranked else "-"
        self._bar.set_postfix_str(
            f"done {counts[TrialState.COMPLETE]} pruned {counts[TrialState.PRUNED]} "
            f"failed {counts[TrialState.FAIL]} best {best}"
        )

    def close(self) -> None:
        self._bar.close()
