"""Loading a study config: YAML, ``--set`` overrides, stored studies; validated as a whole."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import yaml

from tuner.config.rules import Where
from tuner.config.sections import SECTIONS, SpaceConfig, StudyConfig
from tuner.config.sources import DATA_SOURCES
from tuner.dimensions import dimension_values
from tuner.errors import TunerError
from tuner.recipe import DIMENSIONS, NEVER


def load_config(path: Path | None, overrides: list[str] | tuple[str, ...] = ()) -> StudyConfig:
    """Load a study YAML (None: the built-in default study), apply overrides, validate.

    Overrides are ``key.path=value`` strings; the value is parsed as YAML, so
    ``--set data.classes=[cat,dog]`` and ``--set train.epochs=3`` work as expected.
    When no ``search.study`` is given, the study is named after the file.
    """
    raw: dict[str, Any] = {}
    source = "built-in default study"
    if path is not None:
        source = str(path)
        raw = _read_yaml(Path(path))
        if raw.get("search") is None:
            raw["search"] = {}
        if isinstance(raw["search"], dict):
            raw["search"].setdefault("study", Path(path).stem)
    for item in overrides:
        _apply_override(raw, item)
    where = Where(source if not overrides else f"{source} (with --set)")
    return from_dict(raw, where)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TunerError(
            f"{path}: no such config file. Pass a path to a study YAML, e.g. studies/default.yaml."
        )
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TunerError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', exc)}.") from None
    if not isinstance(raw, dict):
        raise TunerError(
            f"{path}: the top level must be a mapping with sections {', '.join(SECTIONS)}."
        )
    return raw


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise TunerError(f"--set {item!r}: expected section.key=value, e.g. --set train.epochs=3.")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise TunerError(f"--set {item!r}: {part} is not a section.")
        node = child
    node[parts[-1]] = value


# Keys added after studies were stored without them, with the value that reproduces what those
# studies did then (a YAML file that omits them gets the default instead): the space's from
# each dimension's ``stored_before``.
_STORED_BEFORE = {("data", "test_source"): "none"} | {
    ("space", name): info.stored_before
    for name, info in DIMENSIONS.items()
    if info.stored_before is not None
}

# Keys that became search dimensions: (old section, key) -> the space dimension they moved to.
_MOVED = {("model", "arch"): "arch", ("train", "label_smoothing"): "label_smoothing"}


def from_stored(raw: dict[str, Any]) -> StudyConfig:
    """The config a study stored, as it was meant when it was stored (see ``_STORED_BEFORE``)."""
    raw = {name: dict(body) if isinstance(body, dict) else body for name, body in raw.items()}
    _move_to_space(raw, Where("stored study config"))
    for (section, key), value in _STORED_BEFORE.items():
        raw.setdefault(section, {}).setdefault(key, value)
    return from_dict(raw)


def _move_to_space(raw: dict[str, Any], where: Where) -> None:
    """``model.arch: resnet50`` and ``train.label_smoothing: 0.1`` (before they were searched)
    read as fixed ``space`` dimensions; giving a key in both places is an error."""
    for (section, key), dimension in _MOVED.items():
        body = raw.get(section)
        if not isinstance(body, dict) or key not in body:
            continue
        space = raw.get("space")
        space = raw["space"] = dict(space) if isinstance(space, dict) else {}
        if dimension in space:
            raise where.error(f"{section}.{key}", f"is now space.{dimension}; give it there only.")
        raw[section] = {k: v for k, v in body.items() if k != key}
        space[dimension] = body[key]


def from_dict(raw: dict[str, Any], where: Where | None = None) -> StudyConfig:
    """Build and validate a StudyConfig from plain data (YAML or the study's stored JSON)."""
    where = where or Where("stored study config")
    raw = dict(raw)
    _move_to_space(raw, where)
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise where.error(unknown[0], f"unknown section; expected one of {', '.join(SECTIONS)}.")
    sections = {
        name: _parse_section(name, cls, raw.get(name) or {}, where)
        for name, cls in SECTIONS.items()
    }
    config = StudyConfig(**sections)
    _check_cross_keys(config, where)
    return config


def _parse_section(name: str, cls: type, body: Any, where: Where) -> Any:
    """Each key through the parser and rule that its field declares: no per-key code here."""
    if not isinstance(body, dict):
        raise where.error(name, "must be a mapping of keys to values.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    noun = "dimension" if cls is SpaceConfig else "key"
    values: dict[str, Any] = {}
    for key, value in body.items():
        dotted = f"{name}.{key}"
        if key not in fields:
            raise where.error(dotted, f"unknown {noun}; {name} takes {', '.join(fields)}.")
        meta = fields[key].metadata
        values[key] = meta["parse"](dotted, value, meta["rule"], where)
    return cls(**values)


def _check_cross_keys(config: StudyConfig, where: Where) -> None:
    data = config.data
    source = DATA_SOURCES[data.source]  # a valid name: the section's rule checked it
    if source.needs_path and not data.path:
        raise where.error(
            "data.path",
            f"the {data.source} source needs the path of an image-folder tree, "
            "e.g. --set data.path=/data/pets.",
        )
    if data.val_source == "test" and source.test_split != "always":
        raise where.error(
            "data.val_source",
            f"'test' needs a dataset with a test split; {data.source} has none: use holdout.",
        )
    holdouts = [("data.val_fraction", data.val_fraction)] if data.val_source == "holdout" else []
    if data.test_source == "holdout" or (
        data.test_source == "auto" and source.test_split == "never"
    ):
        holdouts.append(("data.test_fraction", data.test_fraction))
    if sum(fraction for _, fraction in holdouts) > 0.9:
        raise where.error(
            holdouts[-1][0],
            f"{' + '.join(f'{key} ({fraction})' for key, fraction in holdouts)} leave less than "
            "10% of each class for training; lower them.",
        )
    epochs = config.train.epochs
    for value in dimension_values(config.space.unfreeze_epoch):
        if value != NEVER and value >= epochs:
            raise where.error(
                "space.unfreeze_epoch",
                f"epoch {value} is not before the last epoch "
                f"(train.epochs is {epochs}, epochs count from 0).",
            )
    for value in dimension_values(config.space.warmup_epochs):
        if value >= epochs:
            raise where.error(
                "space.warmup_epochs",
                f"{value} warm-up epochs leave no epoch at the full rate "
                f"(train.epochs is {epochs}); lower it.",
            )
    if config.search.grace_seconds <= config.search.heartbeat_seconds:
        raise where.error(
            "search.grace_seconds",
            "must exceed search.heartbeat_seconds, or a busy worker's trial would be taken for "
            "a dead one; 3 to 6 heartbeats is a good grace period.",
        )
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", config.search.study):
        raise where.error(
            "search.study", f"use letters, digits, '-', '_' and '.', got {config.search.study!r}."
        )
