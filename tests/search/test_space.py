"""Search space: conditional sampling, fixed dimensions, and the classic recipes."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from tuner.config import Choice, Fixed, FloatRange, SpaceConfig, load_config
from tuner.recipe import (
    NEVER,
    RECIPES,
    STAGES,
    Schedule,
    TrialParams,
    frozen_depth_at,
)
from tuner.search.space import OutsideSpace, recipe_trials, replay, sample


def sample_many(space: SpaceConfig, n: int = 60) -> list[tuple[TrialParams, dict]]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append((sample(trial, space, 4), dict(trial.params)))
        study.tell(trial, 0.5)
    return out


def test_conditional_dimensions_are_asked_only_where_they_matter() -> None:
    for params, asked in sample_many(load_config(None).space):
        assert 0 <= params.freeze_depth <= len(STAGES)
        assert ("unfreeze_epoch" in asked) == (params.freeze_depth > 0)
        unfreezes_many = params.unfreeze_epoch is not None and params.freeze_depth > 1
        assert ("unfreeze_mode" in asked) == unfreezes_many
        backbone_trains = params.freeze_depth < len(STAGES) or params.unfreeze_epoch is not None
        assert ("backbone_lr" in asked) == backbone_trains
        assert (params.backbone_lr is None) == (not backbone_trains)
        if params.freeze_depth == 0:
            assert params.unfreeze_epoch is None


def test_fixed_dimensions_are_not_optuna_params() -> None:
    space = SpaceConfig(optimizer=Fixed("adamw"), batch_size=Fixed(48), freeze_depth=Fixed(2))
    for params, asked in sample_many(space, 10):
        assert (params.optimizer, params.batch_size, params.freeze_depth) == ("adamw", 48, 2)
        assert not {"optimizer", "batch_size", "freeze_depth"} & set(asked)


def test_recipes_fit_the_default_space() -> None:
    runnable, skipped = recipe_trials(load_config(None).space, 4)
    assert skipped == []
    assert [r.name for r, _ in runnable] == [r.name for r in RECIPES]
    by_name = {r.name: p for r, p in runnable}
    assert by_name["feature_extraction"]["freeze_depth"] == 5
    assert by_name["feature_extraction"]["unfreeze_epoch"] == NEVER
    assert by_name["early_unfreeze"]["unfreeze_epoch"] == 1
    assert by_name["early_unfreeze"]["backbone_lr"] == 1e-4
    assert by_name["fine_tune"]["freeze_depth"] == 0
    assert all(p["batch_size"] == 32 and p["head_lr"] == 1e-3 for p in by_name.values())
    assert all(p["weight_decay"] == 1e-6 for p in by_name.values())  # nearest to the notebooks' 0


def test_recipe_params_sample_back_exactly() -> None:
    runnable, _ = recipe_trials(load_config(None).space, 4)
    study = optuna.create_study()
    for _, params in runnable:
        study.enqueue_trial(params)
    early = None
    for recipe, _ in runnable:
        trial = study.ask()
        got = sample(trial, load_config(None).space, 4)
        study.tell(trial, 0.5)
        if recipe.name == "early_unfreeze":
            early = got
    assert early == TrialParams(5, 1, "all", 1e-3, 1e-4, "adam", 32, 1e-6)


@pytest.mark.parametrize(
    ("space", "skipped_recipe"),
    [
        (SpaceConfig(optimizer=Choice(("sgd",))), "feature_extraction"),
        (SpaceConfig(unfreeze_epoch=Fixed(NEVER)), "early_unfreeze"),
        (SpaceConfig(backbone_lr=FloatRange(1e-3, 1e-2, log=True)), "early_unfreeze"),
    ],
)
def test_recipes_the_space_excludes_are_skipped_with_a_reason(
    space: SpaceConfig, skipped_recipe: str
) -> None:
    runnable, skipped = recipe_trials(space, 4)
    assert skipped_recipe not in [r.name for r, _ in runnable]
    assert any(line.startswith(f"{skipped_recipe} skipped: space.") for line in skipped)


def test_layer_decay_and_bn_policy_are_asked_only_where_they_matter() -> None:
    space = load_config(None, ["space.bn_policy={choices: [train, freeze_stats]}"]).space
    for params, asked in sample_many(space, 80):
        schedule = Schedule(params.freeze_depth, params.unfreeze_epoch, params.unfreeze_mode)
        training = len(STAGES) - frozen_depth_at(schedule, 3)
        assert ("layer_decay" in asked) == (training >= 2)
        assert ("bn_policy" in asked) == (training >= 1)
        if training < 2:
            assert params.layer_decay == 1.0
        for always in ("warmup_epochs", "label_smoothing", "ema"):
            assert always in asked
        assert "mixup" not in asked and params.mixup == 0.0  # fixed off in the default study


def test_a_sampled_recipe_replays_into_the_same_recipe() -> None:
    space = load_config(None, ["space.arch={choices: [resnet18, resnet34]}"]).space
    sampled = [params for params, _ in sample_many(space, 20)]
    study = optuna.create_study()
    for params in sampled:
        study.enqueue_trial(replay(dataclasses.asdict(params), space, 4))
    for params in sampled:
        trial = study.ask()
        assert sample(trial, space, 4) == params
        study.tell(trial, 0.5)


def test_a_recipe_outside_the_space_says_which_dimension() -> None:
    recipe = dataclasses.asdict(sample_many(load_config(None).space, 1)[0][0])
    narrow = load_config(None, ["space.arch=resnet34"]).space
    with pytest.raises(OutsideSpace, match=r"space\.arch does not allow 'resnet18'"):
        replay(recipe, narrow, 4)
    wide = load_config(None, ["space.mixup={choices: [0.0, 0.2]}"]).space
    assert replay({**recipe, "mixup": 0.2}, wide, 4)["mixup"] == 0.2


def test_an_int_off_the_spaces_grid_is_outside_it_and_recipes_take_the_nearest_point() -> None:
    space = load_config(None, ["space.freeze_depth={low: 1, high: 5, step: 2}"]).space
    recipe = {**dataclasses.asdict(sample_many(load_config(None).space, 1)[0][0])}
    for off_grid in (2, 4, 0, 2.5):
        with pytest.raises(OutsideSpace, match=rf"space\.freeze_depth does not allow {off_grid!r}"):
            replay({**recipe, "freeze_depth": off_grid}, space, 4)
    assert replay({**recipe, "freeze_depth": 3}, space, 4)["freeze_depth"] == 3
    gridded = load_config(None, ["space.batch_size={low: 20, high: 100, step: 25}"]).space
    runnable, skipped = recipe_trials(gridded, 4)  # the notebooks' batch 32: 20 is nearest
    assert not skipped and {params["batch_size"] for _, params in runnable} == {20}
