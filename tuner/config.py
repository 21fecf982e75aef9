"""StudyConfig: the typed, validated form of a study YAML file.

Everything past this module sees frozen dataclasses, never loose dicts. A config is
loaded from YAML, patched with ``--set key.path=value`` overrides, validated (every
error names the file and the key), and serialised into the study so that any worker
can rebuild exactly the same run.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tuner.errors import TunerError
from tuner.recipe import NEVER, OPTIMIZERS, STAGES, UNFREEZE_MODES

DATA_SOURCES = ("digits", "cifar10", "cifar100", "mnist", "fashionmnist", "folder")
AUGMENTATIONS = ("none", "flip", "crop_flip", "crop_flip_jitter")
LR_SCHEDULES = ("none", "cosine", "step")
PRUNERS = ("hyperband", "median", "successive_halving", "none")
SAMPLERS = ("tpe", "random")
AMP_MODES = ("auto", "bf16", "off")
ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


# --- search-space dimensions -------------------------------------------------------------


@dataclass(frozen=True)
class FloatRange:
    """A float sampled from [low, high], log-uniformly when ``log``."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class IntRange:
    """An integer sampled from low..high (inclusive) in steps of ``step``."""

    low: int
    high: int
    step: int = 1


@dataclass(frozen=True)
class Choice:
    """One of a fixed list of values (a categorical parameter)."""

    values: tuple[Any, ...]


@dataclass(frozen=True)
class Fixed:
    """A dimension pinned to one value: not sampled, recorded as is."""

    value: Any


Dimension = FloatRange | IntRange | Choice | Fixed


# --- sections ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are split, sized and augmented."""

    source: str = "digits"
    root: str = "data"
    path: str | None = None
    download: bool = False
    classes: tuple[str, ...] | None = None
    per_class: int | None = None
    relabel: tuple[tuple[str, tuple[str, ...]], ...] | None = None
    val_source: str = "holdout"
    val_fraction: float = 0.2
    split_seed: int = 0
    image_size: int = 32
    augment: str = "flip"
    class_weights: str = "none"
    skip_bad_images: bool = False
    cache_dir: str = "tuner-cache"


@dataclass(frozen=True)
class ModelConfig:
    """Which ResNet and which starting weights (auto, imagenet, none or a file path)."""

    arch: str = "resnet18"
    weights: str = "auto"


@dataclass(frozen=True)
class TrainConfig:
    """Settings fixed for every trial of a study."""

    epochs: int = 4
    lr_schedule: str = "cosine"
    lr_step_epochs: int = 2
    lr_step_gamma: float = 0.1
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    device: str = "auto"
    amp: str = "auto"
    seed: int = 0
    eval_batch_size: int = 256
    feature_cache_mb: int = 1024


@dataclass(frozen=True)
class SpaceConfig:
    """The search space: each dimension a range, a list of choices or a fixed value."""

    freeze_depth: Dimension = IntRange(0, len(STAGES))
    unfreeze_epoch: Dimension = Choice((NEVER, 1, 2))
    unfreeze_mode: Dimension = Choice(UNFREEZE_MODES)
    head_lr: Dimension = FloatRange(1e-4, 3e-2, log=True)
    backbone_lr: Dimension = FloatRange(1e-5, 3e-3, log=True)
    optimizer: Dimension = Choice(tuple(OPTIMIZERS))
    batch_size: Dimension = Choice((32, 64, 128))
    weight_decay: Dimension = FloatRange(1e-6, 1e-2, log=True)


@dataclass(frozen=True)
class SearchConfig:
    """How the study searches: name, budget, sampler, pruner, baselines, kept checkpoints."""

    study: str = "default"
    trials: int = 50
    sampler: str = "tpe"
    seed: int = 0
    pruner: str = "hyperband"
    prune_after_unfreeze: bool = True
    baselines: bool = True
    keep_checkpoints: int = 3
    max_consecutive_failures: int = 5
    heartbeat_seconds: int = 10
    grace_seconds: int = 60
    max_retries: int = 2
    resume: bool = True


@dataclass(frozen=True)
class StudyConfig:
    """The whole resolved configuration of a study."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    search: SearchConfig = field(default_factory=SearchConfig)


# --- loading and validation ----------------------------------------------------------------

_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "space": SpaceConfig,
    "search": SearchConfig,
}

_ENUMS: dict[str, tuple[str, ...]] = {
    "data.source": DATA_SOURCES,
    "data.val_source": ("holdout", "test"),
    "data.augment": AUGMENTATIONS,
    "data.class_weights": ("none", "auto"),
    "model.arch": ARCHS,
    "train.lr_schedule": LR_SCHEDULES,
    "train.amp": AMP_MODES,
    "search.sampler": SAMPLERS,
    "search.pruner": PRUNERS,
}

# (minimum, maximum) for numbers; None means unbounded on that side.
_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "data.per_class": (1, None),
    "data.val_fraction": (0.01, 0.9),
    "data.image_size": (8, 1024),
    "train.epochs": (1, 1000),
    "train.lr_step_epochs": (1, None),
    "train.lr_step_gamma": (1e-6, 1.0),
    "train.label_smoothing": (0.0, 0.99),
    "train.grad_clip": (1e-9, None),
    "train.eval_batch_size": (1, None),
    "train.feature_cache_mb": (0, None),
    "search.trials": (1, None),
    "search.keep_checkpoints": (1, None),
    "search.max_consecutive_failures": (1, None),
    "search.heartbeat_seconds": (1, None),
    "search.grace_seconds": (1, None),
    "search.max_retries": (0, None),
}

# The legal values and type of each space dimension.
_SPACE_RULES: dict[str, tuple[type, float | None, float | None, tuple[str, ...] | None]] = {
    "freeze_depth": (int, 0, len(STAGES), None),
    "unfreeze_epoch": (int, 1, None, None),
    "unfreeze_mode": (str, None, None, UNFREEZE_MODES),
    "head_lr": (float, 1e-9, 10.0, None),
    "backbone_lr": (float, 1e-9, 10.0, None),
    "optimizer": (str, None, None, tuple(OPTIMIZERS)),
    "batch_size": (int, 1, 65536, None),
    "weight_decay": (float, 0.0, 1.0, None),
}


class _Where:
    """Formats errors so that every message names the file and the key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str, problem: str) -> TunerError:
        return TunerError(f"{self.source}: {key}: {problem}")


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
    where = _Where(source if not overrides else f"{source} (with --set)")
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
            f"{path}: the top level must be a mapping with sections {', '.join(_SECTIONS)}."
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


def from_dict(raw: dict[str, Any], where: _Where | None = None) -> StudyConfig:
    """Build and validate a StudyConfig from plain data (YAML or the study's stored JSON)."""
    where = where or _Where("stored study config")
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise where.error(unknown[0], f"unknown section; expected one of {', '.join(_SECTIONS)}.")
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        body = raw.get(name) or {}
        if not isinstance(body, dict):
            raise where.error(name, "must be a mapping of keys to values.")
        if cls is SpaceConfig:
            sections[name] = _parse_space(body, where)
        else:
            sections[name] = _parse_section(name, cls, body, where)
    config = StudyConfig(**sections)
    _check_cross_keys(config, where)
    return config


def _parse_section(name: str, cls: type, body: dict[str, Any], where: _Where) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in body.items():
        dotted = f"{name}.{key}"
        if key not in fields:
            raise where.error(dotted, f"unknown key; {name} takes {', '.join(fields)}.")
        values[key] = _coerce(dotted, value, fields[key].default, where)
    return cls(**values)


def _coerce(key: str, value: Any, default: Any, where: _Where) -> Any:
    """Check one section value against the type of its default and the key's rules."""
    if key == "data.relabel":
        return _parse_relabel(key, value, where)
    if key == "data.classes":
        if value is None:
            return None
        if not isinstance(value, list) or not value:
            raise where.error(
                key, "must be a non-empty list of class names, e.g. [cat, dog, horse]."
            )
        return tuple(str(v) for v in value)
    if value is None:
        if key in ("data.path", "data.per_class", "train.grad_clip"):
            return None
        raise where.error(key, "needs a value.")
    expected = type(default) if default is not None else _OPTIONAL_TYPES.get(key, str)
    if expected is float:
        value = _as_float(value)
    if expected is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
        raise where.error(key, f"must be {_TYPE_NAMES[expected]}, got {value!r}.")
    if key in _ENUMS and value not in _ENUMS[key]:
        raise where.error(key, f"must be one of {', '.join(_ENUMS[key])}, got {value!r}.")
    if key in _BOUNDS:
        low, high = _BOUNDS[key]
        if (low is not None and value < low) or (high is not None and value > high):
            raise where.error(key, f"must be in {_range_text(low, high)}, got {value!r}.")
    return value


def _as_float(value: Any) -> Any:
    """Numbers as floats; also the text YAML 1.1 makes of ``1e-3`` (no dot)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


_OPTIONAL_TYPES: dict[str, type] = {
    "data.path": str,
    "data.per_class": int,
    "train.grad_clip": float,
}
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _range_text(low: float | None, high: float | None) -> str:
    if high is None:
        return f">= {low}"
    if low is None:
        return f"<= {high}"
    return f"{low}..{high}"


def _parse_relabel(
    key: str, value: Any, where: _Where
) -> tuple[tuple[str, tuple[str, ...]], ...] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        raise where.error(
            key,
            "must map each new class to a list of old ones, "
            "e.g. {animal: [cat, dog], vehicle: [truck]}.",
        )
    pairs = []
    for new, olds in value.items():
        if not isinstance(olds, list) or not olds:
            raise where.error(f"{key}.{new}", "must be a non-empty list of existing class names.")
        pairs.append((str(new), tuple(str(o) for o in olds)))
    seen: dict[str, str] = {}
    for new, olds in pairs:
        for old in olds:
            if old in seen:
                raise where.error(
                    key, f"class {old!r} is mapped to both {seen[old]!r} and {new!r}."
                )
            seen[old] = new
    return tuple(pairs)


def _parse_space(body: dict[str, Any], where: _Where) -> SpaceConfig:
    values = {}
    for name, value in body.items():
        if name not in _SPACE_RULES:
            raise where.error(
                f"space.{name}", f"unknown dimension; space takes {', '.join(_SPACE_RULES)}."
            )
        values[name] = _parse_dimension(name, value, where)
    return SpaceConfig(**values)


def _parse_dimension(name: str, value: Any, where: _Where) -> Dimension:
    kind, _, _, _ = _SPACE_RULES[name]
    key = f"space.{name}"
    if not isinstance(value, dict):
        return Fixed(_check_space_value(name, value, key, where))
    if "choices" in value:
        extra = sorted(set(value) - {"choices"})
        if extra:
            raise where.error(
                f"{key}.{extra[0]}", "a dimension has either choices or low/high, not both."
            )
        choices = value["choices"]
        if not isinstance(choices, list) or not choices:
            raise where.error(f"{key}.choices", "must be a non-empty list.")
        checked = tuple(_check_space_value(name, v, f"{key}.choices", where) for v in choices)
        if len(set(checked)) != len(checked):
            raise where.error(f"{key}.choices", f"lists a value twice: {list(choices)}.")
        return Choice(checked)
    if kind is str:
        raise where.error(key, "takes a value or {choices: [...]}, not a range.")
    allowed = {"low", "high", "log"} if kind is float else {"low", "high", "step"}
    extra = sorted(set(value) - allowed)
    if extra:
        raise where.error(
            f"{key}.{extra[0]}",
            f"unknown key; a range takes {', '.join(sorted(allowed))} (or use choices).",
        )
    if "low" not in value or "high" not in value:
        raise where.error(key, "a range needs both low and high.")
    low = _check_space_value(name, value["low"], f"{key}.low", where)
    high = _check_space_value(name, value["high"], f"{key}.high", where)
    if low > high:
        raise where.error(key, f"low ({low}) is greater than high ({high}).")
    if kind is int:
        step = value.get("step", 1)
        if not isinstance(step, int) or isinstance(step, bool) or step < 1:
            raise where.error(f"{key}.step", f"must be a positive integer, got {step!r}.")
        return IntRange(low, high, step)
    log = value.get("log", False)
    if not isinstance(log, bool):
        raise where.error(f"{key}.log", f"must be true or false, got {log!r}.")
    if log and low <= 0:
        raise where.error(f"{key}.low", "must be above 0 on a log scale.")
    return FloatRange(low, high, log)


def _check_space_value(name: str, value: Any, key: str, where: _Where) -> Any:
    kind, low, high, names = _SPACE_RULES[name]
    if name == "unfreeze_epoch" and value == NEVER:
        return NEVER
    if kind is float:
        value = _as_float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        hint = f" or {NEVER!r}" if name == "unfreeze_epoch" else ""
        raise where.error(key, f"must be {_TYPE_NAMES[kind]}{hint}, got {value!r}.")
    if names is not None and value not in names:
        raise where.error(key, f"must be one of {', '.join(names)}, got {value!r}.")
    if (low is not None and value < low) or (high is not None and value > high):
        raise where.error(key, f"must be in {_range_text(low, high)}, got {value!r}.")
    return value


def _check_cross_keys(config: StudyConfig, where: _Where) -> None:
    data = config.data
    if data.source == "folder" and not data.path:
        raise where.error(
            "data.path",
            "the folder source needs the path of an image-folder tree, "
            "e.g. --set data.path=/data/pets.",
        )
    if data.val_source == "test" and data.source in ("digits", "folder"):
        raise where.error(
            "data.val_source",
            f"'test' needs a dataset with a test split; {data.source} has none: use holdout.",
        )
    epochs = config.train.epochs
    for value in dimension_values(config.space.unfreeze_epoch):
        if value != NEVER and value >= epochs:
            raise where.error(
                "space.unfreeze_epoch",
                f"epoch {value} is not before the last epoch "
                f"(train.epochs is {epochs}, epochs count from 0).",
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


def dimension_values(dimension: Dimension) -> tuple[Any, ...]:
    """The values a dimension can take, where it has a finite list (ranges: their bounds)."""
    if isinstance(dimension, Fixed):
        return (dimension.value,)
    if isinstance(dimension, Choice):
        return dimension.values
    return (dimension.low, dimension.high)


# --- serialisation -------------------------------------------------------------------------


def to_dict(config: StudyConfig) -> dict[str, Any]:
    """Plain data in the YAML's own form; ``from_dict(to_dict(c)) == c``."""
    out: dict[str, Any] = {}
    for name in _SECTIONS:
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


# Keys that may differ between runs of one study: the budget, how workers watch and retry
# trials, and where this host keeps things. None of them changes what a trial computes.
_PER_RUN_KEYS = (
    "search.trials",
    "search.max_consecutive_failures",
    "search.heartbeat_seconds",
    "search.grace_seconds",
    "search.max_retries",
    "search.resume",
    "train.device",
    "train.feature_cache_mb",
    "data.download",
    "data.cache_dir",
)


def identity_differences(stored: StudyConfig, current: StudyConfig) -> list[str]:
    """Keys whose values differ and would make the runs of one study incomparable."""
    old, new = _flatten(to_dict(stored)), _flatten(to_dict(current))
    keys = sorted(set(old) | set(new))
    return [
        f"{k}: study has {old.get(k)!r}, this run has {new.get(k)!r}"
        for k in keys
        if k not in _PER_RUN_KEYS and old.get(k) != new.get(k)
    ]


def _flatten(tree: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {f"{name}.{key}": value for name, body in tree.items() for key, value in body.items()}


# --- pinned beside the config ---------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedWeights:
    """What a study's starting weights resolved to; kept in the study so all workers load the same.

    Attributes:
        kind: "imagenet", "none" (random init) or "file".
        name: the torchvision weights enum, e.g. "ResNet18_Weights.IMAGENET1K_V1"; "random init";
            or the absolute path of the file.
        sha256: of the file loaded (torch hub cache file or the user's file); None for random init.
        fallback_warning: set when ``auto`` fell back to random init; show it loudly at start and
            in summaries, because random init usually scores far below ImageNet weights.
    """

    kind: str
    name: str
    sha256: str | None
    fallback_warning: str | None = None

    def describe(self) -> str:
        """One line for humans."""
        if self.kind == "imagenet":
            return f"ImageNet weights {self.name} (sha256 {self.sha256[:12]})"
        if self.kind == "file":
            return f"weights file {self.name} (sha256 {self.sha256[:12]})"
        if self.fallback_warning:
            return "random init (ImageNet weights could not be loaded)"
        return "random init"

    @classmethod
    def random_init(cls) -> ResolvedWeights:
        """No pretrained weights: also how an exported checkpoint is rebuilt before loading."""
        return cls(kind="none", name="random init", sha256=None)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResolvedWeights:
        return cls(
            kind=d["kind"],
            name=d["name"],
            sha256=d["sha256"],
            fallback_warning=d.get("fallback_warning"),
        )
