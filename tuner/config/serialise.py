"""A config back to plain data and YAML (how a study stores it), and comparing two configs."""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml

from tuner.config.sections import SECTIONS, StudyConfig
from tuner.dimensions import Choice, Fixed, FloatRange, IntRange


def to_dict(config: StudyConfig) -> dict[str, Any]:
    """Plain data in the YAML's own form; ``from_dict(to_dict(c)) == c``."""
    out: dict[str, Any] = {}
    for name in SECTIONS:
        section = getattr(config, name)
        out[name] = {f.name: _plain(getattr(section, f.name)) for f in dataclasses.fields(section)}
    if config.data.relabel is not None:
        out["data"]["relabel"] = {new: list(olds) for new, olds in config.data.relabel}
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Fixed):
        return value.value
    if isinstance(value, Choice):
        return {"choices": list(value.values)}
    if isinstance(value, FloatRange):
        return {"low": value.low, "high": value.high, "log": value.log}
    if isinstance(value, IntRange):
        return {"low": value.low, "high": value.high, "step": value.step}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def to_yaml(config: StudyConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=False)


def identity_differences(stored: StudyConfig, current: StudyConfig) -> list[str]:
    """Keys whose values differ and would make the runs of one study incomparable."""
    old, new = flatten(to_dict(stored)), flatten(to_dict(current))
    per_run = {
        f"{name}.{f.name}"
        for name, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
        if f.metadata.get("per_run")
    }
    return [
        f"{k}: study has {old.get(k)!r}, this run has {new.get(k)!r}"
        for k in sorted(set(old) | set(new))
        if k not in per_run and old.get(k) != new.get(k)
    ]


def flatten(tree: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``{"train": {"epochs": 3}}`` -> ``{"train.epochs": 3}``: keys as ``--set`` spells them."""
    return {f"{name}.{key}": value for name, body in tree.items() for key, value in body.items()}
