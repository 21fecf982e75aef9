"""The study as source of truth: pinned config, refusals, budget, checkpoint eviction."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tuner.config import ResolvedWeights, load_config
from tuner.errors import TunerError
from tuner.search import study as study_mod
from tuner.search.storage import open_storage


def test_the_study_pins_config_weights_and_fingerprint(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    config = load_config(None, ["search.study=pinned", "train.epochs=3"])
    weights = ResolvedWeights("file", "/w/resnet18.pt", "ab" * 32)
    study_mod.create_pinned(storage, config, weights, "fp-123")
    loaded = study_mod.load_pinned(storage, "pinned")
    assert (loaded.config, loaded.weights, loaded.fingerprint) == (config, weights, "fp-123")
    assert loaded.study.direction.name == "MAXIMIZE"
    study_mod.check_same_config(
        loaded, load_config(None, ["search.study=pinned", "train.epochs=3", "search.trials=9"])
    )
    with pytest.raises(
        TunerError, match=r"model\.arch: study has 'resnet18', this run has 'resnet34'"
    ):
        study_mod.check_same_config(
            loaded,
            load_config(None, ["search.study=pinned", "train.epochs=3", "model.arch=resnet34"]),
        )


def test_only_study_is_picked_when_unambiguous(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'o.db'}")
    with pytest.raises(TunerError, match="no study yet"):
        study_mod.only_study(storage, required=True)
    for name in ("a", "b"):
        study_mod.create_pinned(
            storage,
            load_config(None, [f"search.study={name}"]),
            ResolvedWeights.random_init(),
            "fp",
        )
    assert study_mod.only_study(storage, required=False) is None
    with pytest.raises(TunerError, match=r"several studies \(a, b\)"):
        study_mod.only_study(storage, required=True)


def test_each_worker_gets_its_own_reproducible_sampler_seed() -> None:
    seeds = [study_mod.worker_seed(7, f"host/{i}") for i in range(8)]
    assert len(set(seeds)) == 8
    assert seeds == [study_mod.worker_seed(7, f"host/{i}") for i in range(8)]
    assert study_mod.worker_seed(7, None) == 7  # a lone worker keeps the study's own seed
    assert study_mod.worker_seed(8, "host/0") != seeds[0]


def test_a_raised_budget_reaches_every_worker_through_the_study(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'b.db'}")
    pinned = study_mod.create_pinned(
        storage, load_config(None, ["search.study=b"]), ResolvedWeights.random_init(), "fp"
    )
    raised = study_mod.set_budget(pinned, 80)
    assert raised.config.search.trials == 80
    other_worker = study_mod.load_pinned(open_storage(f"sqlite:///{tmp_path / 'b.db'}"), "b")
    assert study_mod.stored_budget(other_worker.study) == 80
    assert other_worker.config.search.trials == 80


def test_a_failure_streak_counts_the_whole_study_from_a_start(tmp_path: Path) -> None:
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'f.db'}"))
    states = [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE, TrialState.FAIL]
    for state in states:
        trial = study.ask()
        trial.set_user_attr("fail_reason", f"CUDA out of memory in #{trial.number}")
        study.tell(trial, 1.0 if state == TrialState.COMPLETE else None, state=state)
    assert study_mod.failure_streak(study, limit=2) is None  # the complete trial broke it
    trial = study.ask()
    trial.set_user_attr("fail_reason", "CUDA out of memory in #4")
    study.tell(trial, state=TrialState.FAIL)
    reason = study_mod.failure_streak(study, limit=2)
    assert reason == "2 trials failed in a row; the last one (#4): CUDA out of memory in #4"
    assert study_mod.failure_streak(study, limit=2, since=4) is None  # a re-run starts afresh


# --- the schedule-aware pruner ----------------------------------------------------------------


def _prune_decisions(study: optuna.Study, recipe: dict, curve: list[float]) -> list[bool]:
    """Run one real trial with ``recipe`` as its params attribute; should_prune after each step."""
    trial = study.ask()
    trial.set_user_attr("params", recipe)
    decisions = []
    for step, value in enumerate(curve):
        trial.report(value, step)
        decisions.append(bool(trial.should_prune()))
    study.tell(trial, state=TrialState.PRUNED)
    return decisions


@pytest.mark.parametrize("wrapped", [True, False])
def test_a_late_unfreezer_is_not_pruned_before_it_unfreezes(tmp_path: Path, wrapped: bool) -> None:
    median = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    pruner = study_mod.ScheduleAwarePruner(median) if wrapped else median
    storage = open_storage(f"sqlite:///{tmp_path / 'p.db'}")
    study = optuna.create_study(storage=storage, direction="maximize", pruner=pruner)
    for _ in range(2):  # two fine-tuning trials that did well from the first epoch
        trial = study.ask()
        for step in range(4):
            trial.report(0.9, step)
        study.tell(trial, 0.9)

    late = {"freeze_depth": 5, "unfreeze_epoch": 2, "unfreeze_mode": "all"}
    never = {"freeze_depth": 5, "unfreeze_epoch": None, "unfreeze_mode": "all"}
    plateau = [0.2, 0.2, 0.2, 0.2]
    if wrapped:
        assert _prune_decisions(study, late, plateau) == [False, False, False, True]
    else:
        assert _prune_decisions(study, late, plateau)[0] is True
    assert _prune_decisions(study, never, plateau)[0] is True  # nothing to wait for
    unfrozen = {"freeze_depth": 0, "unfreeze_epoch": None, "unfreeze_mode": "all"}
    assert _prune_decisions(study, unfrozen, plateau)[0] is True


def test_before_it_unfreezes_a_trial_is_compared_with_like_schedules(tmp_path: Path) -> None:
    median = optuna.pruners.MedianPruner(n_startup_trials=0, n_warmup_steps=0)
    pruner = study_mod.ScheduleAwarePruner(median, like_startup=2)
    storage = open_storage(f"sqlite:///{tmp_path / 'l.db'}")
    study = optuna.create_study(storage=storage, direction="maximize", pruner=pruner)
    late = {"freeze_depth": 5, "unfreeze_epoch": 2, "unfreeze_mode": "all"}
    for _ in range(2):  # two late unfreezers that plateaued at 0.5, then jumped
        trial = study.ask()
        trial.set_user_attr("params", late)
        for step, value in enumerate([0.5, 0.5, 0.5, 0.95]):
            trial.report(value, step)
        study.tell(trial, 0.95)
    fine_tuned = study.ask()  # a fine-tuning trial far ahead from the start: not a like schedule
    for step in range(4):
        fine_tuned.report(0.99, step)
    study.tell(fine_tuned, 0.99)

    assert _prune_decisions(study, late, [0.6, 0.6, 0.6, 0.9]) == [False, False, False, True]
    assert _prune_decisions(study, late, [0.1])[0] is True  # worse than its like: cut at once
    other = {"freeze_depth": 3, "unfreeze_epoch": 2, "unfreeze_mode": "all"}
    assert _prune_decisions(study, other, [0.1, 0.1]) == [False, False]  # no like trials yet


def test_on_its_plateau_a_late_unfreezer_is_compared_with_every_trial_frozen_alike(
    tmp_path: Path,
) -> None:
    median = optuna.pruners.MedianPruner(n_startup_trials=0, n_warmup_steps=0)
    pruner = study_mod.ScheduleAwarePruner(median, like_startup=2)
    storage = open_storage(f"sqlite:///{tmp_path / 'a.db'}")
    study = optuna.create_study(storage=storage, direction="maximize", pruner=pruner)
    extractor = {"freeze_depth": 5, "unfreeze_epoch": None, "unfreeze_mode": "all"}
    for _ in range(2):  # two feature extractors: the plateau a depth-5 trial is on at first
        trial = study.ask()
        trial.set_user_attr("params", extractor)
        for step in range(4):
            trial.report(0.6, step)
        study.tell(trial, 0.6)

    late = {"freeze_depth": 5, "unfreeze_epoch": 2, "unfreeze_mode": "all"}
    assert _prune_decisions(study, late, [0.1])[0] is True  # a bad head: cut on the plateau
    # a good one stays; in its unfreeze epoch only trials that unfroze alike compare (none)
    assert _prune_decisions(study, late, [0.6, 0.6, 0.3]) == [False, False, False]
    shallower = {"freeze_depth": 4, "unfreeze_epoch": 2, "unfreeze_mode": "all"}
    assert _prune_decisions(study, shallower, [0.1])[0] is False  # frozen otherwise: no peers


def test_the_schedule_aware_pruner_is_the_default() -> None:
    config = load_config(None, [])
    pruner = study_mod.make_pruner(config.search, config.train.epochs)
    assert isinstance(pruner, study_mod.ScheduleAwarePruner)
    assert isinstance(pruner.pruner, optuna.pruners.HyperbandPruner)
    plain = load_config(None, ["search.prune_after_unfreeze=false"])
    assert isinstance(
        study_mod.make_pruner(plain.search, plain.train.epochs), optuna.pruners.HyperbandPruner
    )
    off = load_config(None, ["search.pruner=none"])
    assert isinstance(study_mod.make_pruner(off.search, 4), optuna.pruners.NopPruner)
