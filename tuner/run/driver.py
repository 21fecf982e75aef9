"""``tuner search`` end to end: config -> study (created or checked) -> data -> trials."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import torch

from tuner import config as config_mod
from tuner.data import PreparedData
from tuner.engine import resolve_study_weights
from tuner.run.host import SearchContext, describe_artifacts, describe_counts, prepare_host
from tuner.run.launcher import Launcher, Slot
from tuner.run.progress import DataProgress, SearchProgress
from tuner.run.workers import WorkerOutcome, run_worker
from tuner.search import attrs, warm_start
from tuner.search import storage as storage_mod
from tuner.search import study as study_mod
from tuner.search.pruners import describe_pruner
from tuner.search.space import recipe_trials
from tuner.search.warm_start import WarmStart

Say = Callable[[str], None]


@dataclass(frozen=True)
class SearchSession:
    """A study ready to search, with everything its trials share."""

    pinned: study_mod.PinnedStudy
    context: SearchContext
    storage_url: str
    artifacts: str


@dataclass(frozen=True)
class SearchRequest:
    """What the user asked for on the command line."""

    config_path: Path | None
    sets: tuple[str, ...] = ()
    study: str | None = None
    trials: int | None = None
    storage: str | None = None
    artifacts: str | None = None
    warm_start: WarmStart | None = None  # seeds the study only if this creates it

    def overrides(self) -> list[str]:
        extra = [f"search.study={self.study}"] if self.study else []
        if self.trials is not None:
            extra.append(f"search.trials={self.trials}")
        return [*self.sets, *extra]

    def names_only_a_study(self) -> bool:
        """`tuner search --study NAME [--trials N]`: continue that study as it is stored."""
        return self.config_path is None and not self.sets and self.study is not None


def prepare(request: SearchRequest, say: Say) -> SearchSession:
    """Load and check everything a search needs before the first trial starts.

    Bad input fails here, before the study is created or touched: an existing study is
    only reused when its stored config, weights and data fingerprint all match. Naming
    only an existing study (no config file, no --set) continues it with its stored config.
    """
    config = config_mod.load_config(request.config_path, request.overrides())
    url = storage_mod.storage_url(request.storage)
    artifacts = storage_mod.artifacts_uri(request.artifacts)
    storage = storage_mod.open_storage(url)
    existing = _existing_study(storage, config.search.study)
    warm = None
    if existing is not None:
        if request.names_only_a_study():
            trials = request.trials or existing.config.search.trials
            config = replace(existing.config, search=replace(existing.config.search, trials=trials))
        study_mod.check_same_config(existing, config)
        weights = existing.weights
    else:
        if request.warm_start is not None:
            warm = warm_start.plan(request.warm_start, config, storage, url)
        archs = tuple(map(str, config_mod.dimension_values(config.space.arch)))
        weights = resolve_study_weights(archs, config.model.weights)
    source = "stored in the study" if existing else request.config_path or "built-in default"
    say(f"config ({source}):")
    say(_indent(config_mod.to_yaml(config)))
    say(f"storage:   {storage_mod.redact(url)}")
    say(f"artifacts: {describe_artifacts(artifacts)}")
    if existing is not None:
        done = study_mod.finished_count(existing.study)
        say(f"study {config.search.study!r} exists with {done} finished trials: continuing it.")
        if request.warm_start is not None:
            say(warm_start.only_new_note(config.search.study))
    say(f"weights:   {weights.describe()}")
    if weights.fallback_warning:
        say(_banner(weights.fallback_warning))
    say(f"pruner:    {describe_pruner(config.search)}")

    fingerprint = existing.fingerprint if existing else None
    context = prepare_host(
        config, weights, artifacts, study_name=config.search.study, fingerprint=fingerprint,
        progress=DataProgress(),
    )  # fmt: skip
    say(_describe_data(context.data))
    say(f"device:    {context.device}, {torch.get_num_threads()} CPU threads")
    say(f"data:      {context.placement.describe()}")
    if existing is not None:
        pinned = study_mod.set_budget(existing, config.search.trials)
    else:
        pinned = study_mod.create_pinned(storage, config, weights, context.data.fingerprint)
        queued = _enqueue_recipes(pinned, say) if config.search.baselines else {}
        if warm is not None:
            warm_start.enqueue(pinned, warm, queued, say)
    return SearchSession(pinned, context, url, artifacts)


def _existing_study(
    storage: optuna.storages.BaseStorage, name: str
) -> study_mod.PinnedStudy | None:
    return study_mod.load_pinned(storage, name) if study_mod.study_exists(storage, name) else None


def _enqueue_recipes(pinned: study_mod.PinnedStudy, say: Say) -> dict[str, dict[str, Any]]:
    """The classic recipes the space can express run first: the search must beat them.

    Returns what it queued, by recipe, so that a warm start does not queue a recipe twice.
    """
    runnable, skipped = recipe_trials(pinned.config.space, pinned.config.train.epochs)
    for recipe, params in runnable:
        pinned.study.enqueue_trial(params, user_attrs={attrs.RECIPE: recipe.name})
    for line in skipped:
        say(f"baseline {line}")
    say(f"enqueued {len(runnable)} classic recipes as the first trials.")
    return {f"classic recipe {recipe.title!r}": params for recipe, params in runnable}


def run(session: SearchSession, slots: list[Slot], say: Say) -> WorkerOutcome:
    """Run the search: in this process for one plain worker, else in one process per slot."""
    study = session.pinned.study
    if len(slots) == 1 and slots[0].gpu is None:
        progress = SearchProgress(study, session.pinned.config.search.trials)
        try:
            return run_worker(study, session.context, (progress,))
        finally:
            progress.close()
    logs = Path("tuner-logs") / study.study_name
    launcher = Launcher(study, slots, session.storage_url, session.artifacts, logs, say)
    return launcher.run(session.pinned.config.search.max_consecutive_failures)


def _describe_data(data: PreparedData) -> str:
    size = tuple(data.train_images.shape[-2:])
    text = (
        f"data:      {describe_counts(data)} images, {data.num_classes} classes "
        f"({', '.join(data.class_names[:12])}{', ...' if data.num_classes > 12 else ''}), "
        f"{size[0]}x{size[1]} px"
    )
    if data.test_count:
        text += "\n           the test images are held out: the search never reads them"
    if data.skipped_files:
        text += (
            f"\n           skipped {len(data.skipped_files)} unreadable image files "
            "(data.skip_bad_images: true)"
        )
    return text


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.rstrip().splitlines())


def _banner(text: str) -> str:
    rule = "!" * 78
    return f"{rule}\n{text}\n{rule}"
