"""The README's config reference lists every key of every section with the default the code has.

Each section's table (under "### `section`") has one row per key: the key, its default (in
backticks, as it would be written in YAML; "-" for none) and its meaning. A default is read
back through the config's own parser, so ``1e-4`` and ``{low: 0, high: 5}`` compare as values.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tuner.config import StudyConfig, from_dict
from tuner.config.sections import SECTIONS

README = Path(__file__).resolve().parents[1] / "README.md"


def reference_rows() -> dict[str, dict[str, str]]:
    """The config reference's tables: section -> key -> the default cell, as written."""
    text = README.read_text()
    start = text.index("\n## Config reference\n")
    section_text = text[start : text.index("\n## ", start + 1)]
    rows: dict[str, dict[str, str]] = {}
    for block in section_text.split("\n### ")[1:]:
        heading, _, body = block.partition("\n")
        name = re.match(r"`(\w+)`", heading)
        if name is None or name.group(1) not in SECTIONS:
            continue
        cells = (line.split(" | ") for line in body.splitlines() if line.startswith("| `"))
        rows[name.group(1)] = {key.strip("| `"): default.strip() for key, default, *_ in cells}
    return rows


def readme_value(cell: str) -> Any:
    """The value a default cell states: "-" is none, else the first backticked YAML."""
    if cell == "-":
        return None
    found = re.search(r"`([^`]+)`", cell)
    assert found, f"default {cell!r} states no value in backticks"
    return yaml.safe_load(found.group(1))


ROWS = reference_rows()
KEYS = [(name, f.name) for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


def test_every_section_has_a_table_and_no_row_names_a_key_the_code_lacks() -> None:
    assert list(ROWS) == list(SECTIONS)
    for name, cls in SECTIONS.items():
        assert set(ROWS[name]) <= {f.name for f in dataclasses.fields(cls)}, name


@pytest.mark.parametrize(("section", "key"), KEYS, ids=[f"{s}.{k}" for s, k in KEYS])
def test_every_key_is_listed_with_the_default_the_code_has(section: str, key: str) -> None:
    assert key in ROWS[section], f"README's config reference has no row for {section}.{key}"
    stated = readme_value(ROWS[section][key])
    read = getattr(from_dict({section: {key: stated}}), section)
    default = getattr(StudyConfig(), section)
    assert getattr(read, key) == getattr(default, key), f"{section}.{key}: README says {stated!r}"
