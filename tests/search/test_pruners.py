"""The pruners: rungs after one epoch, never at the last, and peers chosen by freeze schedule.

Every trial here is a real Optuna trial in a real SQLite study, reported step by step.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tuner import config
from tuner.config import SearchConfig, load_config
from tuner.search import pruners
from tuner.search.storage import open_storage

FINE_TUNE = {"freeze_depth": 0, "unfreeze_epoch": None, "unfreeze_mode": "all"}
EXTRACTOR = {"freeze_depth": 5, "unfreeze_epoch": None, "unfreeze_mode": "all"}
LATE = {"freeze_depth": 5, "unfreeze_epoch": 2, "unfreeze_mode": "all"}


def _study(tmp_path: Path, pruner: optuna.pruners.BasePruner) -> optuna.Study:
    storage = open_storage(f"sqlite:///{tmp_path / 'p.db'}")
    return optuna.create_study(storage=storage, direction="maximize", pruner=pruner)


def _finished(study: optuna.Study, recipe: dict, curve: list[float]) -> None:
    """A trial of ``recipe`` that reported ``curve`` and completed."""
    trial = study.ask()
    trial.set_user_attr("params", recipe)
    for step, value in enumerate(curve):
        trial.report(value, step)
    study.tell(trial, max(curve))


def _prune_decisions(study: optuna.Study, recipe: dict, curve: list[float]) -> list[bool]:
    """Run one real trial with ``recipe`` as its params attribute; should_prune after each step,
    going on whatever the answer, so that every step's decision is seen."""
    trial = study.ask()
    trial.set_user_attr("params", recipe)
    decisions = []
    for step, value in enumerate(curve):
        trial.report(value, step)
        decisions.append(bool(trial.should_prune()))
    study.tell(trial, state=TrialState.PRUNED)
    return decisions


# --- ScheduleAwareASHA, the default ---------------------------------------------------------


@pytest.mark.parametrize(
    ("epochs", "rungs"), [(1, ()), (2, (0,)), (4, (0, 2)), (9, (0, 2)), (10, (0, 2, 8))]
)
def test_rungs_come_after_1_3_9_epochs_and_never_at_the_last(epochs: int, rungs: tuple) -> None:
    assert pruners.ScheduleAwareASHA(epochs).rung_steps == rungs


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"reduction_factor": 1}, "reduction_factor"),  # 1 used to loop forever
        ({"reduction_factor": 0}, "reduction_factor"),
        ({"first_rung": 0}, "first_rung"),
        ({"first_rung": -1}, "first_rung"),
        ({"epochs": 0}, "epochs"),
    ],
)
def test_asha_refuses_arguments_as_optunas_pruners_do(arguments: dict, named: str) -> None:
    with pytest.raises(ValueError, match=f"The value of `{named}` is -?\\d+, but must be"):
        pruners.ScheduleAwareASHA(**{"epochs": 4, **arguments})


def test_asha_words_a_bad_reduction_factor_as_optuna_does() -> None:
    with pytest.raises(ValueError) as ours:
        pruners.ScheduleAwareASHA(4, reduction_factor=1)
    with pytest.raises(ValueError) as optunas:
        optuna.pruners.SuccessiveHalvingPruner(reduction_factor=1)
    assert str(ours.value) == str(optunas.value)


def test_the_smallest_valid_asha_arguments_are_accepted() -> None:
    assert pruners.ScheduleAwareASHA(1, first_rung=1, reduction_factor=2).rung_steps == ()
    assert pruners.ScheduleAwareASHA(8, first_rung=1, reduction_factor=2).rung_steps == (0, 1, 3)


def test_every_trial_is_judged_after_its_first_epoch_among_its_peers(tmp_path: Path) -> None:
    study = _study(tmp_path, pruners.ScheduleAwareASHA(epochs=4))
    _finished(study, FINE_TUNE, [0.8, 0.85, 0.9, 0.92])
    # one peer so far: fewer than 3 reached the rung, nobody is cut there
    assert _prune_decisions(study, FINE_TUNE, [0.5, 0.6]) == [False, False]
    # now 3 with this one: only the top third goes on, from the first epoch
    assert _prune_decisions(study, FINE_TUNE, [0.4])[0] is True
    assert _prune_decisions(study, FINE_TUNE, [0.9])[0] is False
    # at the second rung (after 3 epochs) likewise, once 3 got there; never at the last epoch
    assert _prune_decisions(study, FINE_TUNE, [0.9, 0.9, 0.1, 0.1]) == [False] * 4
    assert _prune_decisions(study, FINE_TUNE, [0.9, 0.9, 0.2, 0.1]) == [False, False, True, False]


def test_a_late_unfreezer_is_cut_on_its_plateau_only_by_trials_frozen_alike(tmp_path: Path) -> None:
    study = _study(tmp_path, pruners.ScheduleAwareASHA(epochs=4))
    for _ in range(3):  # fine-tunes far ahead from the first epoch: not its peers
        _finished(study, FINE_TUNE, [0.9, 0.95, 0.96, 0.97])
    for accuracy in (0.4, 0.45):  # feature extractors: the plateau a depth-5 trial is on at first
        _finished(study, EXTRACTOR, [accuracy] * 4)

    # a good head on the plateau stays, though every fine-tune is far ahead
    assert _prune_decisions(study, LATE, [0.5])[0] is False
    # a bad head is cut after its first epoch, long before its last
    assert _prune_decisions(study, LATE, [0.1])[0] is True
    # feature extraction never unfreezes: it is ranked among every fixed schedule and cut
    assert _prune_decisions(study, EXTRACTOR, [0.5])[0] is True


def test_after_unfreezing_a_trial_meets_only_those_that_unfroze_alike(tmp_path: Path) -> None:
    study = _study(tmp_path, pruners.ScheduleAwareASHA(epochs=4))
    for _ in range(3):
        _finished(study, FINE_TUNE, [0.9, 0.95, 0.96, 0.97])
    for accuracy in (0.8, 0.9):  # two that unfroze at epoch 2 and jumped
        _finished(study, LATE, [0.5, 0.5, accuracy, accuracy])
    # after 3 epochs, one of them unfrozen: ranked against the two alike, not the fine-tunes
    assert _prune_decisions(study, LATE, [0.5, 0.5, 0.95, 0.95]) == [False, False, False, False]
    assert _prune_decisions(study, LATE, [0.5, 0.5, 0.6, 0.6]) == [False, False, True, False]


def test_without_schedule_awareness_it_is_plain_asha(tmp_path: Path) -> None:
    study = _study(tmp_path, pruners.ScheduleAwareASHA(epochs=4, schedule_aware=False))
    for _ in range(3):
        _finished(study, FINE_TUNE, [0.9, 0.95, 0.96, 0.97])
    # the plateau of a late unfreezer is ranked against the fine-tunes: cut at once
    assert _prune_decisions(study, LATE, [0.5])[0] is True


def test_asha_is_the_default_and_each_pruner_can_be_chosen() -> None:
    config = load_config(None, [])
    made = pruners.make_pruner(config.search, config.train.epochs)
    assert isinstance(made, pruners.ScheduleAwareASHA) and made.schedule_aware
    assert made.rung_steps == (0, 2)
    plain = load_config(None, ["search.prune_after_unfreeze=false"])
    assert not pruners.make_pruner(plain.search, plain.train.epochs).schedule_aware


def test_config_offers_exactly_the_pruners_of_the_table() -> None:
    """config (which may not import Optuna) validates search.pruner against its own names."""
    assert tuple(pruners.PRUNERS) == config.PRUNERS
    for name, info in pruners.PRUNERS.items():
        assert info.name == name and info.description
        pruners.make_pruner(SearchConfig(pruner=name), epochs=4)  # every row builds


def test_a_search_says_which_pruner_it_uses_in_words() -> None:
    median = pruners.describe_pruner(SearchConfig(pruner="median"))
    assert median.startswith("median, Optuna's MedianPruner") and "unfreezes" in median
    plain = pruners.describe_pruner(SearchConfig(pruner="median", prune_after_unfreeze=False))
    assert "unfreezes" not in plain
    assert "unfreezes" not in pruners.describe_pruner(SearchConfig(pruner="asha"))


@pytest.mark.parametrize("pruner", [p for p in pruners.PRUNERS if p != "asha"])
def test_optuna_pruners_are_wrapped_to_wait_for_the_unfreeze(pruner: str) -> None:
    plain = pruners.make_pruner(SearchConfig(pruner=pruner, prune_after_unfreeze=False), 4)
    made = pruners.make_pruner(SearchConfig(pruner=pruner), epochs=4)
    if pruner != "none":  # wrapped: no plain decision before a trial unfreezes
        assert isinstance(made, pruners.ScheduleAwarePruner)
        assert type(made.pruner) is type(plain)
        made = made.pruner
    expected = {
        "hyperband": optuna.pruners.HyperbandPruner,
        "median": optuna.pruners.MedianPruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "none": optuna.pruners.NopPruner,
    }[pruner]
    assert isinstance(made, expected)


# --- ScheduleAwarePruner, around Optuna's pruners ---------------------------------------------


@pytest.mark.parametrize("wrapped", [True, False])
def test_a_late_unfreezer_is_not_pruned_before_it_unfreezes(tmp_path: Path, wrapped: bool) -> None:
    median = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    study = _study(tmp_path, pruners.ScheduleAwarePruner(median) if wrapped else median)
    for _ in range(2):  # two fine-tuning trials that did well from the first epoch
        trial = study.ask()
        for step in range(4):
            trial.report(0.9, step)
        study.tell(trial, 0.9)

    plateau = [0.2, 0.2, 0.2, 0.2]
    if wrapped:
        assert _prune_decisions(study, LATE, plateau) == [False, False, False, True]
    else:
        assert _prune_decisions(study, LATE, plateau)[0] is True
    assert _prune_decisions(study, EXTRACTOR, plateau)[0] is True  # nothing to wait for
    assert _prune_decisions(study, FINE_TUNE, plateau)[0] is True


def test_before_it_unfreezes_a_trial_is_compared_with_like_schedules(tmp_path: Path) -> None:
    median = optuna.pruners.MedianPruner(n_startup_trials=0, n_warmup_steps=0)
    study = _study(tmp_path, pruners.ScheduleAwarePruner(median, like_startup=2))
    for _ in range(2):  # two late unfreezers that plateaued at 0.5, then jumped
        _finished(study, LATE, [0.5, 0.5, 0.5, 0.95])
    fine_tuned = study.ask()  # a fine-tuning trial far ahead from the start: not a like schedule
    for step in range(4):
        fine_tuned.report(0.99, step)
    study.tell(fine_tuned, 0.99)

    assert _prune_decisions(study, LATE, [0.6, 0.6, 0.6, 0.9]) == [False, False, False, True]
    assert _prune_decisions(study, LATE, [0.1])[0] is True  # worse than its like: cut at once
    other = {"freeze_depth": 3, "unfreeze_epoch": 2, "unfreeze_mode": "all"}
    assert _prune_decisions(study, other, [0.1, 0.1]) == [False, False]  # no like trials yet


def test_on_its_plateau_a_late_unfreezer_is_compared_with_every_trial_frozen_alike(
    tmp_path: Path,
) -> None:
    median = optuna.pruners.MedianPruner(n_startup_trials=0, n_warmup_steps=0)
    study = _study(tmp_path, pruners.ScheduleAwarePruner(median, like_startup=2))
    for _ in range(2):  # two feature extractors: the plateau a depth-5 trial is on at first
        _finished(study, EXTRACTOR, [0.6] * 4)

    assert _prune_decisions(study, LATE, [0.1])[0] is True  # a bad head: cut on the plateau
    # a good one stays; in its unfreeze epoch only trials that unfroze alike compare (none)
    assert _prune_decisions(study, LATE, [0.6, 0.6, 0.3]) == [False, False, False]
    shallower = {"freeze_depth": 4, "unfreeze_epoch": 2, "unfreeze_mode": "all"}
    assert _prune_decisions(study, shallower, [0.1])[0] is False  # frozen otherwise: no peers
