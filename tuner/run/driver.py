"""``tuner search`` end to end: config -> study (created or checked) -> data -> trials.

What it prints first is a short header a newcomer can read: the study, where the config came
from and only what differs from the built-in default, the data, the weights, the device. The
full resolved config is stored in the study and written to ``tuner-logs/<study>/config.yaml``
(``tuner config show`` prints either), not dumped on the terminal.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml

from tuner import config as config_mod
from tuner.config.serialise import flatten
from tuner.data import PreparedData
from tuner.engine import resolve_study_weights
from tuner.progress import Say
from tuner.run.host import (
    SearchContext,
    describe_artifacts,
    describe_counts,
    load_study_data,
    ready_host,
)
from tuner.run.launcher import Launcher, Slot, describe_gpus
from tuner.run.progress import DataProgress, SearchProgress
from tuner.run.request import SearchRequest
from tuner.run.workers import WorkerOutcome, run_worker
from tuner.search import attrs, confirm, deadline, warm_start
from tuner.search import storage as storage_mod
from tuner.search import study as study_mod
from tuner.search.pruners import describe_pruner
from tuner.search.space import recipe_trials

LOGS = Path("tuner-logs")
"""Each study's folder of logs and its full config, in the current directory."""

_LISTED_DIFFERENCES = 8  # keys named on the config line; the rest are counted


@dataclass(frozen=True)
class SearchSession:
    """A study ready to search, with everything its trials share."""

    pinned: study_mod.PinnedStudy
    context: SearchContext
    storage_url: str
    artifacts: str
    config_file: Path  # the study's full config, as stored in it


def open_search(request: SearchRequest, say: Say, slots: Sequence[Slot] = ()) -> SearchSession:
    """Load and check everything a search needs before the first trial starts.

    Bad input fails here, before the study is created or touched: an existing study is
    only reused when its stored config, weights and data fingerprint all match. Naming
    only an existing study (no config file, no --set) continues it with its stored config.
    The data is checked right after the two lines naming the study and its config, before
    the weights are resolved (which may download), so a data error is near the top. With
    GPU ``slots`` (``--gpus``) this process only launches the workers: it touches no CUDA
    function, and the device it names is theirs (each chooses its own placement).
    """
    config, storage, url, existing = _study_config(request)
    name, artifacts = config.search.study, storage_mod.artifacts_uri(request.artifacts)
    config_file = LOGS / name / "config.yaml"
    say(_study_line(name, url, existing, request))
    say(_config_line(request, config, existing, config_file))
    warm = None
    if existing is None and request.warm_start is not None:
        warm = warm_start.plan(request.warm_start, config, storage, url)
    fingerprint = existing.fingerprint if existing else None
    data = load_study_data(config, name, fingerprint, DataProgress())
    say(_describe_data(data))
    weights = existing.weights if existing else _resolve_weights(config)
    say(f"weights:   {weights.describe()}")
    if weights.fallback_warning:
        say(_banner(weights.fallback_warning))
    say(f"pruner:    {describe_pruner(config.search)}")
    say(f"confirm:   {confirm.describe(config.search)}")
    gpu_slots = [slot for slot in slots if slot.gpu is not None]
    context = ready_host(
        config, weights, artifacts, study_name=name, fingerprint=fingerprint, data=data,
        gpu_workers=bool(gpu_slots),
    )  # fmt: skip
    say(f"artifacts: {describe_artifacts(artifacts)}")
    say(_describe_device(context, gpu_slots))
    if existing is not None:
        pinned = study_mod.set_budget(existing, config.search.trials)
    else:
        pinned = study_mod.create_pinned(storage, config, weights, data.fingerprint)
        queued = _enqueue_recipes(pinned, say) if config.search.baselines else {}
        if warm is not None:
            warm_start.enqueue(pinned, warm, queued, say)
    write_config_file(pinned.config, config_file)
    return SearchSession(pinned, context, url, artifacts, config_file)


def _describe_device(context: SearchContext, gpu_slots: list[Slot]) -> str:
    """Where the trials compute: this process's device and placement, or its GPU workers'."""
    if gpu_slots:
        return (
            f"device:    cuda in {len(gpu_slots)} worker processes on {describe_gpus(gpu_slots)}, "
            f"{gpu_slots[0].threads} CPU threads each\n"
            "placement: each worker chooses resident or streamed for its GPU "
            f"(train.data_on_device: {context.config.train.data_on_device})"
        )
    return (
        f"device:    {context.device}, {torch.get_num_threads()} CPU threads\n"
        f"placement: {context.placement.describe()}"
    )


def _study_config(
    request: SearchRequest,
) -> tuple[config_mod.StudyConfig, optuna.storages.BaseStorage, str, study_mod.PinnedStudy | None]:
    """The config to search with, the storage (URL too) and the study when it exists already."""
    config = config_mod.load_config(request.config_path, request.overrides())
    url = storage_mod.storage_url(request.storage)
    storage = storage_mod.open_storage(url)
    existing = _existing_study(storage, config.search.study)
    if existing is not None:
        if request.names_only_a_study():
            trials = request.trials or existing.config.search.trials
            config = replace(existing.config, search=replace(existing.config.search, trials=trials))
        study_mod.check_same_config(existing, config)
    return config, storage, url, existing


def _study_line(
    name: str, url: str, existing: study_mod.PinnedStudy | None, request: SearchRequest
) -> str:
    """E.g. "study:     'pets' (new) in sqlite:///tuner.db"."""
    if existing is None:
        return f"study:     {name!r} (new) in {storage_mod.redact(url)}"
    done = study_mod.finished_count(existing.study)
    line = (
        f"study:     {name!r} ({done} finished trials: continuing it) in {storage_mod.redact(url)}"
    )
    if request.warm_start is not None:
        line += f"\n           {warm_start.only_new_note(name)}"
    return line


def _config_line(
    request: SearchRequest,
    config: config_mod.StudyConfig,
    existing: study_mod.PinnedStudy | None,
    config_file: Path,
) -> str:
    """Where the config came from and only what in it differs from the built-in default.

    E.g. "config:    studies/x.yaml: the built-in default with train.epochs=3,
    data.source=folder (in full: tuner-logs/x/config.yaml)". ``search.study`` is left out:
    the study line names the study.
    """
    ours = flatten(config_mod.to_dict(config))
    default = flatten(config_mod.to_dict(config_mod.load_config(None)))
    changed = [
        f"{key}={_compact(value)}"
        for key, value in ours.items()
        if key != "search.study" and default.get(key) != value
    ]
    said = "the built-in default"
    if changed:
        said += " with " + ", ".join(changed[:_LISTED_DIFFERENCES])
    if len(changed) > _LISTED_DIFFERENCES:
        said += f" and {len(changed) - _LISTED_DIFFERENCES} more"
    if existing is not None and request.names_only_a_study():
        said = f"stored in the study: {said}"
    elif request.config_path is not None:
        said = f"{request.config_path}: {said}"
    return f"config:    {said} (in full: {config_file})"


def _compact(value: Any) -> str:
    """A config value as --set would take it: ``3``, ``folder``, ``{low: 0, high: 5}``."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20)
    return text.removesuffix("...\n").strip()


def _resolve_weights(config: config_mod.StudyConfig) -> config_mod.PinnedWeights:
    """The weights of every arch the new study's space may build (``model.weights``)."""
    archs = tuple(map(str, config_mod.dimension_values(config.space.arch)))
    return resolve_study_weights(archs, config.model.weights)


def write_config_file(config: config_mod.StudyConfig, path: Path) -> None:
    """Write the study's full config as YAML, atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (
        f"# the full config of study {config.search.study!r}, as stored in the study "
        f"(`tuner config show --study {config.search.study}` prints it from there)\n"
        f"{config_mod.to_yaml(config)}"
    )
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as out:
        out.write(text)
    os.replace(out.name, path)


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


def run_search(
    session: SearchSession,
    slots: list[Slot],
    say: Say,
    ends_at: deadline.Deadline | None = None,
) -> WorkerOutcome:
    """Run the search: in this process for one plain worker, else in one process per slot;
    with ``ends_at`` (`--minutes`) its workers stop starting trials in time for the confirm."""
    study = session.pinned.study
    deadline.store(study, ends_at)
    if len(slots) == 1 and slots[0].gpu is None:
        progress = SearchProgress(study, session.pinned.config.search.trials)
        try:
            return run_worker(study, session.context, (progress,))
        finally:
            progress.close()
    logs = LOGS / study.study_name
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


def _banner(text: str) -> str:
    rule = "!" * 78
    return f"{rule}\n{text}\n{rule}"
