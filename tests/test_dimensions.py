"""The one table of search dimensions (``recipe.DIMENSIONS``) and every place that names them.

A dimension added to the table but not to TrialParams, SpaceConfig or sampling fails here; so
does one whose searched default would make studies stored before it search it when resumed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tuner.config import Fixed, SpaceConfig, StudyConfig, from_dict, from_stored, to_dict
from tuner.dimensions import Dimension, dimension_values
from tuner.recipe import DIMENSIONS, RECIPES, TrialParams
from tuner.search.space import build_params

# The space as the first version of tuner stored it in a study (commit 2a070ff): the
# dimensions that existed from the start, the only ones with no ``stored_before``.
FIRST_STORED_SPACE = {
    "freeze_depth": {"low": 0, "high": 5, "step": 1},
    "unfreeze_epoch": {"choices": ["never", 1, 2]},
    "unfreeze_mode": {"choices": ["all", "progressive"]},
    "head_lr": {"low": 0.0001, "high": 0.03, "log": True},
    "backbone_lr": {"low": 1e-05, "high": 0.003, "log": True},
    "optimizer": {"choices": ["sgd", "adam", "adamw"]},
    "batch_size": {"choices": [32, 64, 128]},
    "weight_decay": {"low": 1e-06, "high": 0.01, "log": True},
}


def test_every_row_is_keyed_by_its_name() -> None:
    assert all(name == info.name for name, info in DIMENSIONS.items())


def test_trial_params_has_one_field_per_dimension_in_the_tables_order() -> None:
    fields = dataclasses.fields(TrialParams)
    assert [f.name for f in fields] == list(DIMENSIONS)
    for f in fields:  # a field's default is the recipe "off": the classic value, else the first
        if f.default is not dataclasses.MISSING:
            info = DIMENSIONS[f.name]
            off = dimension_values(info.default)[0] if info.classic is None else info.classic
            assert f.default == off, f.name


def test_space_config_has_one_field_per_dimension_with_its_default_and_rule() -> None:
    fields = dataclasses.fields(SpaceConfig)
    assert [f.name for f in fields] == list(DIMENSIONS)
    for f in fields:
        info = DIMENSIONS[f.name]
        assert f.default == info.default, f.name
        assert f.metadata["rule"] == info.rule, f.name


@pytest.mark.parametrize("name", list(DIMENSIONS))
def test_a_rows_values_pass_its_own_rule(name: str) -> None:
    info = DIMENSIONS[name]
    written = to_dict(StudyConfig())["space"][name]  # the default, as a study stores it
    assert getattr(from_dict({"space": {name: written}}).space, name) == info.default
    for value in (info.classic, info.stored_before):
        if value is not None:
            assert getattr(from_dict({"space": {name: value}}).space, name) == Fixed(value)
    if info.words is not None:
        assert info.classic is not None, f"{name}: its words need an off value to leave unsaid"


def asked_by(recipe: dict[str, Any]) -> list[str]:
    """The dimensions ``build_params`` asks for, in order, to build ``recipe``."""
    asked = []

    def suggest(name: str, dimension: Dimension) -> Any:
        asked.append(name)
        return recipe.get(name, dimension_values(dimension)[0])

    build_params(suggest, SpaceConfig(), epochs=4)
    return asked


def test_sampling_asks_for_every_dimension_in_the_tables_order() -> None:
    asked = [asked_by(recipe.params) for recipe in RECIPES]
    assert set().union(*asked) == set(DIMENSIONS)  # none left unsampled, none unknown
    for names in asked:
        assert names == [name for name in DIMENSIONS if name in names]  # each once, in order
    early_unfreeze = next(
        names for r, names in zip(RECIPES, asked, strict=True) if r.name == "early_unfreeze"
    )
    assert early_unfreeze == list(DIMENSIONS)  # every stage trains by the end: all asked


def test_a_study_stored_with_the_first_space_searches_nothing_new() -> None:
    space = from_stored({**to_dict(StudyConfig()), "space": FIRST_STORED_SPACE}).space
    first = from_dict({"space": FIRST_STORED_SPACE}).space
    for name, info in DIMENSIONS.items():
        if name in FIRST_STORED_SPACE:
            assert info.stored_before is None, name
            assert getattr(space, name) == getattr(first, name), name
        else:
            assert info.stored_before is not None, f"{name}: old studies would take its default"
            assert getattr(space, name) == Fixed(info.stored_before), name
