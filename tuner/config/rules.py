"""What each config key accepts, declared once beside its field, and the one validator.

Every section field carries a :class:`Rule` and a parser in its metadata (:func:`setting`,
:func:`dimension_rule`); loading runs each key through them, so no key has code of its own and
every message names the file and the key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import field
from typing import Any

from tuner.dimensions import Choice, Dimension, Fixed, FloatRange, IntRange, Rule
from tuner.errors import TunerError


class Where:
    """Formats errors so that every message names the file and the key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str, problem: str) -> TunerError:
        return TunerError(f"{self.source}: {key}: {problem}")


Parser = Callable[[str, Any, Rule, Where], Any]
"""How a field reads its raw value: (dotted key, value, the field's rule, where) -> value."""

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _check(key: str, value: Any, rule: Rule, where: Where) -> Any:
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


def _coerce(key: str, value: Any, rule: Rule, where: Where) -> Any:
    """A section key: null only where optional; a number given for text (``root: 2024``) is text."""
    if value is None:
        if rule.optional:
            return None
        raise where.error(key, "needs a value.")
    if rule.kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    return _check(key, value, rule, where)


def parse_classes(key: str, value: Any, rule: Rule, where: Where) -> tuple[str, ...] | None:
    """``data.classes``: a non-empty list of names, kept as text."""
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise where.error(key, "must be a non-empty list of class names, e.g. [cat, dog, horse].")
    return tuple(str(v) for v in value)


def parse_relabel(
    key: str, value: Any, rule: Rule, where: Where
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


def _parse_dimension(key: str, value: Any, rule: Rule, where: Where) -> Dimension:
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


def _parse_range(key: str, value: dict[str, Any], rule: Rule, where: Where) -> Dimension:
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


def setting(
    default: Any,
    *,
    kind: type | None = None,
    choices: tuple[str, ...] | None = None,
    low: float | None = None,
    high: float | None = None,
    parse: Parser = _coerce,
    per_run: bool = False,
) -> Any:
    """A section key with its rule; its type is its default's unless ``kind`` says otherwise.

    ``per_run`` marks a key that may differ between runs of one study (the budget, how workers
    watch and retry trials, where this host keeps things): it changes nothing a trial computes.
    """
    rule = Rule(kind or type(default), low, high, choices, optional=default is None)
    return field(default=default, metadata={"rule": rule, "parse": parse, "per_run": per_run})


def dimension_rule(rule: Rule) -> dict[str, Any]:
    """A dimension's metadata: the rule its fixed value, choices and range bounds must pass."""
    return {"rule": rule, "parse": _parse_dimension}
