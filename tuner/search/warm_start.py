"""``tuner search --warm-start``: a new study first tries what won earlier studies.

A second dataset often wants what won on the first. When ``tuner search`` creates a study, the
best complete trials of the named earlier studies (in the same storage, or in
``--warm-start-storage``) are queued right after the classic recipes, replayed into the new
study's space. A recipe that space cannot express is skipped with the reason, and a recipe
queued already (a classic one, or the same winner of two studies) runs once. They run as
ordinary trials marked with :data:`attrs.WARM_START`, so the summary and the report show
whether the earlier winner still wins here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from tuner.config import StudyConfig
from tuner.errors import TunerError
from tuner.progress import Say
from tuner.recipe import TrialParams, describe_schedule
from tuner.search import attrs
from tuner.search import study as study_mod
from tuner.search.space import OutsideSpace, replay
from tuner.search.storage import open_storage, redact

DEFAULT_TOP = 3
"""Best complete trials taken from each earlier study (--warm-start-top)."""


@dataclass(frozen=True)
class WarmStart:
    """--warm-start STUDY[,STUDY...], --warm-start-storage URL and --warm-start-top N."""

    studies: tuple[str, ...]
    storage: str | None = None  # None: the new study's own storage
    top: int = DEFAULT_TOP

    @classmethod
    def parse(cls, studies: str | None, storage: str | None, top: int | None) -> WarmStart | None:
        """The options as given on the command line; None without --warm-start."""
        if studies is None:
            if storage is not None or top is not None:
                raise TunerError(
                    "--warm-start-storage and --warm-start-top go with --warm-start STUDY: "
                    "name the earlier studies to start from."
                )
            return None
        names = tuple(dict.fromkeys(name.strip() for name in studies.split(",")))
        if not all(names):
            raise TunerError(
                f"--warm-start {studies!r}: give study names separated by commas, "
                "e.g. --warm-start pets,flowers."
            )
        if top is not None and top < 1:
            raise TunerError(f"--warm-start-top {top}: must be at least 1.")
        return cls(names, storage, DEFAULT_TOP if top is None else top)


@dataclass(frozen=True)
class Source:
    """The earlier study and trial whose recipe a warm-start trial replays."""

    study: str
    number: int

    @classmethod
    def of(cls, trial: FrozenTrial) -> Source | None:
        """The trial's source, or None for a trial no warm start queued."""
        stored = trial.user_attrs.get(attrs.WARM_START)
        if stored is None:
            return None
        study, _, number = stored.rpartition("#")
        return cls(study, int(number))

    def __str__(self) -> str:
        """As stored in :data:`attrs.WARM_START`: "pets#12"."""
        return f"{self.study}#{self.number}"

    @property
    def title(self) -> str:
        """How summaries, reports and figures name it: "warm start: pets #12"."""
        return f"warm start: {self.study} #{self.number}"

    @property
    def description(self) -> str:
        """Its title: a warm start has no longer name, as a classic Recipe has."""
        return self.title


@dataclass(frozen=True)
class Seed:
    """One earlier trial's recipe, with the params that replay it in the new study."""

    source: Source
    value: float  # its val accuracy in the earlier study
    recipe: TrialParams
    params: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """What a warm start will queue, and the recipes the new space cannot express."""

    studies: tuple[str, ...]
    seeds: tuple[Seed, ...]
    skipped: tuple[str, ...]  # "warm start: pets #12 skipped: space.arch does not allow ..."


def plan(
    request: WarmStart, config: StudyConfig, storage: optuna.storages.BaseStorage, url: str
) -> Plan:
    """Read the earlier studies' best recipes and replay them into ``config``'s space.

    Called before the new study exists, so that a missing earlier study fails before anything
    is created. ``storage`` (at ``url``) is the new study's, used unless --warm-start-storage.
    """
    if request.storage is not None:
        url = request.storage
        storage = open_storage(url, must_exist=True, option="--warm-start-storage")
    seeds: list[Seed] = []
    skipped: list[str] = []
    for name in request.studies:
        earlier = _load(storage, url, name)
        ranked = study_mod.ranked_trials(earlier.study)
        if not ranked:
            skipped.append(f"warm start: study {name!r} has no complete trial: nothing to take")
        for trial in ranked[: request.top]:
            try:
                seeds.append(_seed(earlier, trial, config))
            except OutsideSpace as exc:
                skipped.append(f"{Source(name, trial.number).title} skipped: {exc}")
    return Plan(request.studies, tuple(seeds), tuple(skipped))


def _seed(earlier: study_mod.PinnedStudy, trial: FrozenTrial, config: StudyConfig) -> Seed:
    """The earlier trial's full recipe, replayed into ``config``'s space (or OutsideSpace)."""
    recipe = attrs.trial_params(trial, earlier.config.space)
    if recipe is None:
        raise OutsideSpace("it recorded no recipe")
    params = replay(dataclasses.asdict(recipe), config.space, config.train.epochs)
    return Seed(Source(earlier.study.study_name, trial.number), trial.value, recipe, params)


def _load(storage: optuna.storages.BaseStorage, url: str, name: str) -> study_mod.PinnedStudy:
    """The earlier study; a missing one is an error naming it and the studies there."""
    if not study_mod.study_exists(storage, name):
        known = ", ".join(study_mod.study_names(storage)) or "none"
        raise TunerError(
            f"--warm-start {name}: no such study in {redact(url)} (studies there: {known}). "
            "Name one of those, or give --warm-start-storage URL where it is."
        )
    return study_mod.load_pinned(storage, name)


def enqueue(
    pinned: study_mod.PinnedStudy, warm: Plan, queued: dict[str, dict[str, Any]], say: Say
) -> None:
    """Queue the plan's recipes after ``queued`` (what runs first: name -> params), each once."""
    for line in warm.skipped:
        say(line)
    count = 0
    for seed in warm.seeds:
        same = next((name for name, params in queued.items() if params == seed.params), None)
        if same is not None:
            say(f"{seed.source.title} skipped: the same recipe as {same}, queued already")
            continue
        pinned.study.enqueue_trial(seed.params, user_attrs={attrs.WARM_START: str(seed.source)})
        queued[seed.source.title] = seed.params
        count += 1
        schedule = describe_schedule(seed.recipe, pinned.config.train.epochs)
        say(f"{seed.source.title} (val accuracy {seed.value:.4f} there) queued: {schedule}")
    recipes = "recipe" if count == 1 else "recipes"
    say(f"enqueued {count} warm-start {recipes} from {', '.join(warm.studies)} as the next trials.")
    budget = pinned.config.search.trials
    if len(queued) > budget:
        say(
            f"note: the budget (--trials {budget}) runs only {budget} of the {len(queued)} "
            "queued trials; raise it to run them all."
        )


def only_new_note(study: str) -> str:
    """What --warm-start says on a study that exists: it seeds new studies only."""
    return (
        f"warm start: study {study!r} exists, so --warm-start queues nothing: it only seeds a "
        "study this command creates (its queue was set when it was created)."
    )
