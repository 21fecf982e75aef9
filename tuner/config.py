"""StudyConfig: the typed, validated form of a study YAML file.

Everything past this module sees frozen dataclasses, never loose dicts. A config is
loaded from YAML, patched with ``--set key.path=value`` overrides, validated (every
error names the file and the key), and serialised into the study so that any worker
can rebuild exactly the same run.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tuner.errors import TunerError
from tuner.recipe import BN_POLICIES, NEVER, OPTIMIZERS, STAGES, UNFREEZE_MODES

DATA_SOURCES = ("digits", "cifar10", "cifar100", "mnist", "fashionmnist", "folder")
AUGMENTATIONS = ("none", "flip", "crop_flip", "crop_flip_jitter")
LR_SCHEDULES = ("none", "cosine", "step")
PRUNERS = ("asha", "hyperband", "median", "successive_halving", "none")
SAMPLERS = ("tpe", "random")
AMP_MODES = ("auto", "bf16", "off")
DATA_ON_DEVICE = ("auto", "always", "never")
TEST_SOURCES = ("auto", "holdout", "none")
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


# --- rules: what each key accepts, declared once beside its field ------------------------


@dataclass(frozen=True)
class Rule:
    """What one key accepts, kept in its field's metadata so that it is stated only once.

    ``also`` lists literal values taken as they are beside the typed ones (``never``);
    ``optional`` lets a section key be null (its default is None).
    """

    kind: type
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    also: tuple[Any, ...] = ()
    optional: bool = False


class _Where:
    """Formats errors so that every message names the file and the key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str, problem: str) -> TunerError:
        return TunerError(f"{self.source}: {key}: {problem}")


_Parser = Callable[[str, Any, Rule, _Where], Any]
"""How a field reads its raw value: (dotted key, value, the field's rule, where) -> value."""

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _check(key: str, value: Any, rule: Rule, where: _Where) -> Any:
    """The one validator: a value's type, then its choices, then its bounds, all from ``rule``."""
    if value in rule.also:
        return value
    if rule.kind is float:
        value = _as_float(value)
    if not isinstance(value, rule.kind) or (rule.kind is not bool and isinstance(value, bool)):
        hint = "".join(f" or {v!r}" for v in rule.also)
        raise where.error(key, f"must be {_TYPE_NAMES[rule.kind]}{hint}, got {value!r}.")
    if rule.choices is not None and value not in rule.choices:
        raise where.error(key, f"must be one of {', '.join(rule.choices)}, got {value!r}.")
    low, high = rule.low, rule.high
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


def _range_text(low: float | None, high: float | None) -> str:
    if high is None:
        return f">= {low}"
    if low is None:
        return f"<= {high}"
    return f"{low}..{high}"


def _coerce(key: str, value: Any, rule: Rule, where: _Where) -> Any:
    """A section key: null only where optional; a number given for text (``root: 2024``) is text."""
    if value is None:
        if rule.optional:
            return None
        raise where.error(key, "needs a value.")
    if rule.kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    return _check(key, value, rule, where)


def _parse_classes(key: str, value: Any, rule: Rule, where: _Where) -> tuple[str, ...] | None:
    """``data.classes``: a non-empty list of names, kept as text."""
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise where.error(key, "must be a non-empty list of class names, e.g. [cat, dog, horse].")
    return tuple(str(v) for v in value)


def _parse_relabel(
    key: str, value: Any, rule: Rule, where: _Where
) -> tuple[tuple[str, tuple[str, ...]], ...] | None:
    """``data.relabel``: new class -> old classes, each old class mapped at most once."""
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


def _parse_dimension(key: str, value: Any, rule: Rule, where: _Where) -> Dimension:
    """A space dimension: a fixed value, ``{choices: [...]}``, or a low/high range."""
    if not isinstance(value, dict):
        return Fixed(_check(key, value, rule, where))
    if "choices" not in value:
        return _parse_range(key, value, rule, where)
    extra = sorted(set(value) - {"choices"})
    if extra:
        raise where.error(
            f"{key}.{extra[0]}", "a dimension has either choices or low/high, not both."
        )
    choices = value["choices"]
    if not isinstance(choices, list) or not choices:
        raise where.error(f"{key}.choices", "must be a non-empty list.")
    checked = tuple(_check(f"{key}.choices", v, rule, where) for v in choices)
    if len(set(checked)) != len(checked):
        raise where.error(f"{key}.choices", f"lists a value twice: {list(choices)}.")
    return Choice(checked)


def _parse_range(key: str, value: dict[str, Any], rule: Rule, where: _Where) -> Dimension:
    """A range of the dimension's kind: integers step, floats may be log-scaled."""
    if rule.kind is str:
        raise where.error(key, "takes a value or {choices: [...]}, not a range.")
    allowed = {"low", "high", "log"} if rule.kind is float else {"low", "high", "step"}
    extra = sorted(set(value) - allowed)
    if extra:
        raise where.error(
            f"{key}.{extra[0]}",
            f"unknown key; a range takes {', '.join(sorted(allowed))} (or use choices).",
        )
    if "low" not in value or "high" not in value:
        raise where.error(key, "a range needs both low and high.")
    low = _check(f"{key}.low", value["low"], rule, where)
    high = _check(f"{key}.high", value["high"], rule, where)
    for end, bound in (("low", low), ("high", high)):
        if bound in rule.also:
            raise where.error(
                f"{key}.{end}",
                f"a range takes numbers; list {bound!r} in choices instead, "
                f"e.g. {{choices: [{bound}, 1, 2]}}.",
            )
    if low > high:
        raise where.error(key, f"low ({low}) is greater than high ({high}).")
    if rule.kind is int:
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


def _key(
    default: Any,
    *,
    kind: type | None = None,
    choices: tuple[str, ...] | None = None,
    low: float | None = None,
    high: float | None = None,
    parse: _Parser = _coerce,
    per_run: bool = False,
) -> Any:
    """A section key with its rule; its type is its default's unless ``kind`` says otherwise.

    ``per_run`` marks a key that may differ between runs of one study (the budget, how workers
    watch and retry trials, where this host keeps things): it changes nothing a trial computes.
    """
    rule = Rule(kind or type(default), low, high, choices, optional=default is None)
    return field(default=default, metadata={"rule": rule, "parse": parse, "per_run": per_run})


def _space(
    kind: type,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[str, ...] | None = None,
    also: tuple[Any, ...] = (),
) -> dict[str, Any]:
    """A dimension's metadata: the rule its fixed value, choices and range bounds must pass."""
    return {"rule": Rule(kind, low, high, choices, also), "parse": _parse_dimension}


# --- sections ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are split, sized and augmented."""

    source: str = _key("digits", choices=DATA_SOURCES)
    root: str = _key("data")
    path: str | None = _key(None, kind=str)
    download: bool = _key(False, per_run=True)
    classes: tuple[str, ...] | None = _key(None, kind=tuple, parse=_parse_classes)
    per_class: int | None = _key(None, kind=int, low=1)
    relabel: tuple[tuple[str, tuple[str, ...]], ...] | None = _key(
        None, kind=tuple, parse=_parse_relabel
    )
    val_source: str = _key("holdout", choices=("holdout", "test"))
    val_fraction: float = _key(0.2, low=0.01, high=0.9)
    test_source: str = _key("auto", choices=TEST_SOURCES)
    test_fraction: float = _key(0.2, low=0.01, high=0.9)
    split_seed: int = _key(0)
    image_size: int = _key(32, low=8, high=1024)
    augment: str = _key("flip", choices=AUGMENTATIONS)
    class_weights: str = _key("none", choices=("none", "auto"))
    skip_bad_images: bool = _key(False)
    cache_dir: str = _key("tuner-cache", per_run=True)
    prepare_workers: int = _key(0, low=0, per_run=True)  # 0: one per CPU core of the host


@dataclass(frozen=True)
class ModelConfig:
    """Which starting weights each ResNet of ``space.arch`` gets (auto, imagenet, none, a file)."""

    weights: str = _key("auto")


@dataclass(frozen=True)
class TrainConfig:
    """Settings fixed for every trial of a study."""

    epochs: int = _key(4, low=1, high=1000)
    lr_schedule: str = _key("cosine", choices=LR_SCHEDULES)
    lr_step_epochs: int = _key(2, low=1)
    lr_step_gamma: float = _key(0.1, low=1e-6, high=1.0)
    grad_clip: float | None = _key(None, kind=float, low=1e-9)
    device: str = _key("auto", per_run=True)
    amp: str = _key("auto", choices=AMP_MODES)
    seed: int = _key(0)
    eval_batch_size: int = _key(256, low=1)
    feature_cache_mb: int = _key(1024, low=0, per_run=True)
    data_on_device: str = _key("auto", choices=DATA_ON_DEVICE, per_run=True)
    data_on_device_share: float = _key(0.5, low=0.0, high=1.0, per_run=True)


@dataclass(frozen=True)
class SpaceConfig:
    """The search space: each dimension a range, a list of choices or a fixed value."""

    freeze_depth: Dimension = field(
        default=IntRange(0, len(STAGES)), metadata=_space(int, low=0, high=len(STAGES))
    )
    unfreeze_epoch: Dimension = field(
        default=Choice((NEVER, 1, 2)), metadata=_space(int, low=1, also=(NEVER,))
    )
    unfreeze_mode: Dimension = field(
        default=Choice(UNFREEZE_MODES), metadata=_space(str, choices=UNFREEZE_MODES)
    )
    head_lr: Dimension = field(
        default=FloatRange(1e-4, 3e-2, log=True), metadata=_space(float, low=1e-9, high=10.0)
    )
    backbone_lr: Dimension = field(
        default=FloatRange(1e-5, 3e-3, log=True), metadata=_space(float, low=1e-9, high=10.0)
    )
    optimizer: Dimension = field(
        default=Choice(tuple(OPTIMIZERS)), metadata=_space(str, choices=tuple(OPTIMIZERS))
    )
    batch_size: Dimension = field(
        default=Choice((32, 64, 128)), metadata=_space(int, low=1, high=65536)
    )
    weight_decay: Dimension = field(
        default=FloatRange(1e-6, 1e-2, log=True), metadata=_space(float, low=0.0, high=1.0)
    )
    arch: Dimension = field(default=Fixed("resnet18"), metadata=_space(str, choices=ARCHS))
    layer_decay: Dimension = field(
        default=FloatRange(0.5, 1.0), metadata=_space(float, low=0.01, high=1.0)
    )
    warmup_epochs: Dimension = field(default=Choice((0, 1)), metadata=_space(int, low=0))
    label_smoothing: Dimension = field(
        default=Choice((0.0, 0.1)), metadata=_space(float, low=0.0, high=0.99)
    )
    mixup: Dimension = field(default=Fixed(0.0), metadata=_space(float, low=0.0, high=10.0))
    cutmix: Dimension = field(default=Fixed(0.0), metadata=_space(float, low=0.0, high=10.0))
    ema: Dimension = field(
        default=Choice((0.0, 0.99)), metadata=_space(float, low=0.0, high=0.9999)
    )
    bn_policy: Dimension = field(default=Fixed("train"), metadata=_space(str, choices=BN_POLICIES))


@dataclass(frozen=True)
class SearchConfig:
    """How the study searches: name, budget, sampler, pruner, baselines, kept checkpoints."""

    study: str = _key("default")
    trials: int = _key(50, low=1, per_run=True)
    sampler: str = _key("tpe", choices=SAMPLERS)
    seed: int = _key(0)
    pruner: str = _key("asha", choices=PRUNERS)
    prune_after_unfreeze: bool = _key(True)
    baselines: bool = _key(True)
    keep_checkpoints: int = _key(3, low=1)
    max_consecutive_failures: int = _key(5, low=1, per_run=True)
    heartbeat_seconds: int = _key(10, low=1, per_run=True)
    grace_seconds: int = _key(60, low=1, per_run=True)
    max_retries: int = _key(2, low=0, per_run=True)
    resume: bool = _key(True, per_run=True)


@dataclass(frozen=True)
class StudyConfig:
    """The whole resolved configuration of a study."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    search: SearchConfig = field(default_factory=SearchConfig)


# --- loading -------------------------------------------------------------------------------

# Section name -> its dataclass, in StudyConfig's order (the order messages list them in).
_SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(StudyConfig)}


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


# Keys added after studies were stored without them, with the value that reproduces what those
# studies did then (a YAML file that omits them gets the default instead).
_STORED_BEFORE = {
    ("data", "test_source"): "none",
    ("space", "layer_decay"): 1.0,
    ("space", "warmup_epochs"): 0,
    ("space", "label_smoothing"): 0.0,
    ("space", "ema"): 0.0,
}

# Keys that became search dimensions: (old section, key) -> the space dimension they moved to.
_MOVED = {("model", "arch"): "arch", ("train", "label_smoothing"): "label_smoothing"}


def from_stored(raw: dict[str, Any]) -> StudyConfig:
    """The config a study stored, as it was meant when it was stored (see ``_STORED_BEFORE``)."""
    raw = {name: dict(body) if isinstance(body, dict) else body for name, body in raw.items()}
    _move_to_space(raw, _Where("stored study config"))
    for (section, key), value in _STORED_BEFORE.items():
        raw.setdefault(section, {}).setdefault(key, value)
    return from_dict(raw)


def _move_to_space(raw: dict[str, Any], where: _Where) -> None:
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


def from_dict(raw: dict[str, Any], where: _Where | None = None) -> StudyConfig:
    """Build and validate a StudyConfig from plain data (YAML or the study's stored JSON)."""
    where = where or _Where("stored study config")
    raw = dict(raw)
    _move_to_space(raw, where)
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise where.error(unknown[0], f"unknown section; expected one of {', '.join(_SECTIONS)}.")
    sections = {
        name: _parse_section(name, cls, raw.get(name) or {}, where)
        for name, cls in _SECTIONS.items()
    }
    config = StudyConfig(**sections)
    _check_cross_keys(config, where)
    return config


def _parse_section(name: str, cls: type, body: Any, where: _Where) -> Any:
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
    holdouts = [("data.val_fraction", data.val_fraction)] if data.val_source == "holdout" else []
    if data.test_source == "holdout" or (data.test_source == "auto" and data.source == "digits"):
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


def identity_differences(stored: StudyConfig, current: StudyConfig) -> list[str]:
    """Keys whose values differ and would make the runs of one study incomparable."""
    old, new = _flatten(to_dict(stored)), _flatten(to_dict(current))
    per_run = {
        f"{name}.{f.name}"
        for name, cls in _SECTIONS.items()
        for f in dataclasses.fields(cls)
        if f.metadata.get("per_run")
    }
    return [
        f"{k}: study has {old.get(k)!r}, this run has {new.get(k)!r}"
        for k in sorted(set(old) | set(new))
        if k not in per_run and old.get(k) != new.get(k)
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


@dataclass(frozen=True)
class PinnedWeights:
    """The starting weights of every arch ``space.arch`` allows, resolved once per study.

    Each arch starts from its own weights (torchvision's default ImageNet weights for it, or
    random init); a weights file fits one arch only, so it needs ``space.arch`` fixed.
    """

    by_arch: tuple[tuple[str, ResolvedWeights], ...]

    def __getitem__(self, arch: str) -> ResolvedWeights:
        for name, weights in self.by_arch:
            if name == arch:
                return weights
        raise TunerError(
            f"space.arch: {arch!r} has no starting weights pinned in this study "
            f"(it pins {', '.join(self.archs)}); start a new study to search it"
        )

    @property
    def archs(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.by_arch)

    @property
    def fallback_warning(self) -> str | None:
        """The first arch's warning that it fell back to random init, if any did."""
        return next((w.fallback_warning for _, w in self.by_arch if w.fallback_warning), None)

    def describe(self) -> str:
        """One line for humans: the weights, prefixed by their arch when there are several."""
        if len(self.by_arch) == 1:
            return self.by_arch[0][1].describe()
        return "; ".join(f"{name}: {weights.describe()}" for name, weights in self.by_arch)

    def to_dict(self) -> dict[str, Any]:
        return {name: weights.to_dict() for name, weights in self.by_arch}

    @classmethod
    def from_dict(cls, d: dict[str, Any], arch: Dimension) -> PinnedWeights:
        """Read back :meth:`to_dict`; a study stored before arch was searched kept one record,
        for the arch its ``space.arch`` is now fixed at."""
        if "kind" in d:
            return cls(((str(dimension_values(arch)[0]), ResolvedWeights.from_dict(d)),))
        return cls(tuple((name, ResolvedWeights.from_dict(w)) for name, w in d.items()))
