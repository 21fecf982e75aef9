"""Markdown notes that optuna-dashboard shows beside the study and each trial.

A trial's note says its recipe in words, how it ended, where it ran and how to export it.
optuna-dashboard keeps notes in the study's system attributes, so unlike a finished trial's
own attributes they can be rewritten later: when a checkpoint is evicted, and when
`tuner dashboard` backfills studies made before notes existed.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState
from optuna_dashboard import get_note, save_note

from tuner import config as config_mod
from tuner.recipe import RECIPES, describe_schedule
from tuner.search import attrs
from tuner.search import study as study_mod
from tuner.search.optuna_internals import NoteHandle
from tuner.search.warm_start import Source

_RECIPE_NAMES = {recipe.name: recipe.description for recipe in RECIPES}


def trial_note(study: optuna.Study, trial: FrozenTrial, config: config_mod.StudyConfig) -> str:
    """The note of a finished trial."""
    epochs = config.train.epochs
    stored = trial.user_attrs
    state = trial.state.name.lower()
    if trial.state == TrialState.COMPLETE:
        heading = (
            f"## Trial {trial.number}: complete, val accuracy {trial.value:.4f} "
            f"(best epoch {stored.get(attrs.BEST_EPOCH)})"
        )
    else:
        heading = f"## Trial {trial.number}: {state}"
    lines = [heading, ""]
    if attrs.PARAMS in stored:
        lines.append(
            f"**Schedule:** {describe_schedule(attrs.trial_params(trial, config.space), epochs)}"
        )
    if stored.get(attrs.RECIPE) in _RECIPE_NAMES:
        lines.append(f"\n**Classic recipe:** {_RECIPE_NAMES[stored[attrs.RECIPE]]}")
    source = Source.of(trial)
    if source is not None:
        lines.append(
            f"\n**Warm start:** the recipe of trial #{source.number} of study `{source.study}`"
        )
    why = stored.get(attrs.STOPPED) or stored.get(attrs.FAIL_REASON)
    if why:
        lines.append(f"\n**Why it stopped:** {why}")
    curve = stored.get(attrs.VAL_ACCURACY) or []
    if curve:
        lines.append("\n**Val accuracy per epoch:** " + ", ".join(f"{v:.4f}" for v in curve))
    worker = stored.get(attrs.WORKER) or {}
    if worker:
        seed = f", seed {stored[attrs.SEED]}" if attrs.SEED in stored else ""
        lines.append(f"\n**Ran on:** {worker.get('worker')} ({worker.get('device')}){seed}")
    lines.append("\n" + _checkpoint_line(study, trial))
    return "\n".join(lines) + "\n"


def _checkpoint_line(study: optuna.Study, trial: FrozenTrial) -> str:
    if attrs.CHECKPOINT not in trial.user_attrs:
        if trial.state == TrialState.COMPLETE:
            return "**Checkpoint:** none kept (not in the top `search.keep_checkpoints` then)."
        return "**Checkpoint:** none (only complete trials keep one)."
    if study_mod.checkpoint_removed(study, trial):
        return (
            "**Checkpoint: removed**, it fell out of the top `search.keep_checkpoints`; "
            "the checkpoint artifact listed below no longer exists (its figures remain)."
        )
    return (
        "**Export it:** "
        f"`tuner export-best --study {study.study_name} --trial {trial.number} --out best/`"
    )


def study_note(pinned: study_mod.PinnedStudy) -> str:
    """The study's note: the pinned config as YAML, the weights and the data fingerprint."""
    config_yaml = yaml.safe_dump(config_mod.to_dict(pinned.config), sort_keys=False)
    name = pinned.study.study_name
    return "\n".join(
        [
            f"## Study {name}",
            "",
            f"**Weights:** {pinned.weights.describe()}  ",
            f"**Data fingerprint:** `{pinned.fingerprint}`  ",
            f"**Export the best trial:** `tuner export-best --study {name} --out best/`",
            "",
            "**Config** (every worker rebuilds its trials from this):",
            "",
            "```yaml",
            config_yaml.rstrip(),
            "```",
            "",
        ]
    )


def write_trial_note(
    study: optuna.Study, trial: FrozenTrial, config: config_mod.StudyConfig
) -> bool:
    """Save the trial's note if it changed; True when written."""
    handle = NoteHandle.of(study, trial)
    body = trial_note(study, trial, config)
    if get_note(handle) == body:
        return False
    save_note(handle, body)
    return True


def write_study_note(pinned: study_mod.PinnedStudy) -> bool:
    """Save the study's note if it changed; True when written."""
    body = study_note(pinned)
    if get_note(pinned.study) == body:
        return False
    save_note(pinned.study, body)
    return True


def backfill(pinned: study_mod.PinnedStudy) -> int:
    """Write missing or stale notes of the study and its ended trials; returns how many."""
    written = int(write_study_note(pinned))
    for trial in pinned.study.get_trials(deepcopy=False, states=study_mod.ENDED):
        written += write_trial_note(pinned.study, trial, pinned.config)
    return written


def note_when_ended(
    config: config_mod.StudyConfig,
) -> Callable[[optuna.Study, FrozenTrial], None]:
    """A study callback that notes each trial as it ends (worker loops add it)."""

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        write_trial_note(study, trial, config)

    return callback
