"""Pruners on per-epoch validation accuracy, and what a trial's freeze schedule means to them.

Steps are 0-based epochs. Whatever the pruner, a trial is never asked about its last epoch
(``objective._TrialReporter``): one that trained all its epochs is complete. A new pruner is
a row of :data:`PRUNERS` and its name in config's ``PRUNERS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.config import SearchConfig
from tuner.recipe import NEVER, Schedule, frozen_depth_at
from tuner.search import attrs
from tuner.search.optuna_internals import NarrowedStudy

FIRST_RUNG_EPOCHS = 1
"""Epochs a trial trains before the default pruner first judges it."""
REDUCTION_FACTOR = 3
"""At each rung of the default pruner, the top 1/3 of a trial's peers go on."""

_REPORTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)

PrunerFactory = Callable[[int, SearchConfig], optuna.pruners.BasePruner]
"""Builds a pruner for trials of ``epochs`` epochs under a study's search settings."""


@dataclass(frozen=True)
class PrunerInfo:
    """One choice of ``search.pruner``: its name, what it does in words, and how it is built.

    The one table of pruners (:data:`PRUNERS`); config's list of names is checked against it
    (tests/search/test_pruners.py), since config may not import Optuna.
    """

    name: str
    description: str
    factory: PrunerFactory
    waits_for_unfreeze: bool  # wrapped in ScheduleAwarePruner under search.prune_after_unfreeze

    def wrapped(self, search: SearchConfig) -> bool:
        """Whether the study's pruner is this one inside a :class:`ScheduleAwarePruner`."""
        return self.waits_for_unfreeze and search.prune_after_unfreeze


PRUNERS: dict[str, PrunerInfo] = {
    info.name: info
    for info in (
        PrunerInfo(
            "asha",
            "asynchronous successive halving: after 1, 3, 9, ... epochs a trial goes on while "
            "in the top third of its peers there (the trials frozen as it was, unless "
            "search.prune_after_unfreeze is false)",
            lambda epochs, search: ScheduleAwareASHA(
                epochs, schedule_aware=search.prune_after_unfreeze
            ),
            waits_for_unfreeze=False,  # it knows the schedules itself
        ),
        PrunerInfo(
            "hyperband",
            "Optuna's HyperbandPruner: successive halving in several brackets of first rungs",
            lambda epochs, search: optuna.pruners.HyperbandPruner(
                min_resource=1, max_resource=epochs, reduction_factor=REDUCTION_FACTOR
            ),
            waits_for_unfreeze=True,
        ),
        PrunerInfo(
            "median",
            "Optuna's MedianPruner: cut below the median of complete trials at the same epoch",
            lambda epochs, search: optuna.pruners.MedianPruner(
                n_startup_trials=5, n_warmup_steps=1
            ),
            waits_for_unfreeze=True,
        ),
        PrunerInfo(
            "successive_halving",
            "Optuna's SuccessiveHalvingPruner: the top third of each rung goes on",
            lambda epochs, search: optuna.pruners.SuccessiveHalvingPruner(
                min_resource=1, reduction_factor=REDUCTION_FACTOR
            ),
            waits_for_unfreeze=True,
        ),
        PrunerInfo(
            "none",
            "no pruning: every trial trains all its epochs",
            lambda epochs, search: optuna.pruners.NopPruner(),
            waits_for_unfreeze=False,  # nothing to wait for
        ),
    )
}


def make_pruner(search: SearchConfig, epochs: int) -> optuna.pruners.BasePruner:
    """The study's pruner (``search.pruner``, a row of :data:`PRUNERS`) for ``epochs`` epochs.

    Optuna's own pruners are wrapped in a :class:`ScheduleAwarePruner` under
    ``search.prune_after_unfreeze``.
    """
    info = PRUNERS[search.pruner]
    pruner = info.factory(epochs, search)
    return ScheduleAwarePruner(pruner) if info.wrapped(search) else pruner


def describe_pruner(search: SearchConfig) -> str:
    """The study's pruner in words, for the opening lines of a search."""
    info = PRUNERS[search.pruner]
    waiting = "; until a trial unfreezes, only trials frozen alike judge it"
    return f"{info.name}, {info.description}" + (waiting if info.wrapped(search) else "")


class ScheduleAwareASHA(optuna.pruners.BasePruner):
    """Asynchronous successive halving whose rungs know each trial's freeze schedule.

    A trial is judged at rungs only, after 1, 3, 9, ... epochs (``first_rung *
    reduction_factor**k``) and never after its last epoch, so every trial gets its first
    decision after one epoch and no epoch is trained for a decision that saves nothing. At a
    rung it goes on while its accuracy there is in the top ``1 / reduction_factor`` of its
    peers that reached the same rung (complete, pruned or running), itself included; until
    ``reduction_factor`` of them have, it goes on.

    Who its peers are is what the schedule decides (``schedule_aware``, the default): a trial
    whose frozen stages never change during the run (full fine-tuning, feature extraction, a
    fixed frozen prefix) is ranked among every such trial; a trial that unfreezes during the
    run is ranked only among trials that had exactly its frozen depth in every epoch so far.
    On its plateau a late unfreezer thus meets the trials frozen as it is (a bad head is cut
    after one epoch, as anyone's), and after unfreezing only the trials that unfroze alike, never
    the full fine-tunes that had all those epochs to train their backbone. Without
    ``schedule_aware`` every trial is everyone's peer: plain ASHA, as Ray Tune's
    ``ASHAScheduler`` does it.
    """

    def __init__(
        self,
        epochs: int,
        first_rung: int = FIRST_RUNG_EPOCHS,
        reduction_factor: int = REDUCTION_FACTOR,
        schedule_aware: bool = True,
    ) -> None:
        _check_at_least(
            epochs=(epochs, 1), first_rung=(first_rung, 1), reduction_factor=(reduction_factor, 2)
        )
        self.reduction_factor = reduction_factor
        self.schedule_aware = schedule_aware
        rungs, trained = [], first_rung
        while trained < epochs:  # a rung at the last epoch would decide nothing
            rungs.append(trained - 1)
            trained *= reduction_factor
        self.rung_steps = tuple(rungs)

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step not in self.rung_steps:
            return False
        value = trial.intermediate_values[step]
        schedule = schedule_of(trial)
        values = [value]
        for other in study.get_trials(deepcopy=False, states=_REPORTED):
            if other.number == trial.number or step not in other.intermediate_values:
                continue
            if not self.schedule_aware or _peers(schedule, schedule_of(other), step):
                values.append(other.intermediate_values[step])
        if len(values) < self.reduction_factor:
            return False
        kept = math.ceil(len(values) / self.reduction_factor)
        return value < sorted(values, reverse=True)[kept - 1]


def _check_at_least(**values: tuple[int, int]) -> None:
    """Raise ValueError for an argument below its least value, worded as Optuna's pruners do."""
    for name, (value, least) in values.items():
        if value < least:
            raise ValueError(f"The value of `{name}` is {value}, but must be `{name} >= {least}`")


def _peers(schedule: Schedule, other: Schedule, step: int) -> bool:
    """Whether ``other`` is a fair yardstick for ``schedule`` at ``step`` (ScheduleAwareASHA)."""
    if schedule.unfreeze_epoch is None:
        return other.unfreeze_epoch is None
    return _depth_path(other, step) == _depth_path(schedule, step)


class ScheduleAwarePruner(optuna.pruners.BasePruner):
    """An Optuna pruner that judges a trial before its unfreeze epoch + 1 only against like trials.

    A trial that unfreezes at epoch u plateaus at frozen-backbone accuracy until then and
    usually jumps after it; a plain pruner compares that plateau with trials already
    fine-tuning and cuts it for a curve it was never going to have. So until epoch u + 1 the
    trial at epoch s is compared only with complete trials that trained the same way in
    epochs 0..s (the same frozen depth in each: while it still waits, every trial frozen at
    its depth, feature extractors included; in the epoch it unfreezes, trials with the same
    unfreeze epoch and mode), by their median at epoch s, once ``like_startup`` of them
    exist: a bad head learning rate is still cut on the plateau, a good late unfreezer is not.
    From epoch u + 1 on (and for trials that never unfreeze, from the start) the wrapped
    pruner decides as usual, catching up on the rungs it skipped with the trial's current
    value.

    The wrapped pruner still buckets trials into its own brackets when it prunes; only the
    sampler no longer filters trials by Hyperband bracket, since it sees this wrapper instead.
    """

    def __init__(self, pruner: optuna.pruners.BasePruner, like_startup: int = 3) -> None:
        self.pruner = pruner
        self._like = optuna.pruners.MedianPruner(n_startup_trials=like_startup, n_warmup_steps=0)

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        schedule = schedule_of(trial)
        if schedule.unfreeze_epoch is not None and step < schedule.unfreeze_epoch + 1:
            path = _depth_path(schedule, step)
            alike = NarrowedStudy(study, lambda t: _depth_path(schedule_of(t), step) == path)
            return self._like.prune(alike, trial)
        return self.pruner.prune(study, trial)


def _depth_path(schedule: Schedule, step: int) -> tuple[int, ...]:
    return tuple(frozen_depth_at(schedule, epoch) for epoch in range(step + 1))


def schedule_of(trial: FrozenTrial) -> Schedule:
    """The trial's schedule; ``unfreeze_epoch`` is None when it never unfreezes.

    It is read from the trial's ``params`` user attribute (the full recipe, fixed dimensions
    included), else its Optuna params.
    """
    recipe = attrs.recipe_params(trial)
    depth = int(recipe.get("freeze_depth") or 0)
    value = recipe.get("unfreeze_epoch") if depth else None
    unfreeze = None if value in (None, NEVER) else int(value)
    return Schedule(depth, unfreeze, str(recipe.get("unfreeze_mode", "all")))
