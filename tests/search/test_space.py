"""Search space: conditional sampling, fixed dimensions, and the classic recipes."""

from __future__ import annotations

import optuna
import pytest

from tuner.config import Choice, Fixed, FloatRange, SpaceConfig, load_config
from tuner.recipe import (
    NEVER,
    RECIPES,
    STAGES,
    Schedule,
    TrialParams,
    describe_schedule,
    frozen_depth_at,
)
from tuner.search.space import recipe_trials, sample


def sample_many(space: SpaceConfig, n: int = 60) -> list[tuple[TrialParams, dict]]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append((sample(trial, space), dict(trial.params)))
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
    runnable, skipped = recipe_trials(load_config(None).space)
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
    runnable, _ = recipe_trials(load_config(None).space)
    study = optuna.create_study()
    for _, params in runnable:
        study.enqueue_trial(params)
    early = None
    for recipe, _ in runnable:
        trial = study.ask()
        got = sample(trial, load_config(None).space)
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
    runnable, skipped = recipe_trials(space)
    assert skipped_recipe not in [r.name for r, _ in runnable]
    assert any(line.startswith(f"{skipped_recipe} skipped: space.") for line in skipped)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            TrialParams(3, 2, "all", 3e-3, 1e-4, "adamw", 64, 1e-5),
            "stem+layer1-2 frozen, all unfrozen at epoch 2 of 0..3; head lr 3e-3, "
            "backbone lr 1e-4, AdamW, batch 64, weight decay 1e-5",
        ),
        (
            TrialParams(5, None, "all", 1e-3, None, "adam", 32, 1e-6),
            "whole backbone frozen throughout; head lr 1e-3, Adam, batch 32, weight decay 1e-6",
        ),
        (
            TrialParams(0, None, "all", 2.5e-4, 7.5e-4, "sgd", 128, 0.0),
            "nothing frozen; head lr 2.5e-4, backbone lr 7.5e-4, SGD, batch 128, weight decay 0",
        ),
        (
            TrialParams(5, 1, "progressive", 1e-3, 1e-4, "adam", 32, 1e-6),
            "whole backbone frozen, unfrozen one stage per epoch from epoch 1 of 0..3, deepest "
            "first (stem+layer1 still frozen at the end); head lr 1e-3, backbone lr 1e-4, Adam, "
            "batch 32, weight decay 1e-6",
        ),
        (
            TrialParams(2, 1, "progressive", 1.26e-2, 3e-5, "sgd", 32, 1e-6),
            "stem+layer1 frozen, unfrozen one stage per epoch from epoch 1 of 0..3, deepest "
            "first; head lr 1.3e-2, backbone lr 3e-5, SGD, batch 32, weight decay 1e-6",
        ),
    ],
)
def test_describe_schedule_says_the_recipe_in_words(params: TrialParams, expected: str) -> None:
    assert describe_schedule(params, epochs=4) == expected


def test_described_progressive_unfreeze_matches_the_training_schedule() -> None:
    for depth in range(2, len(STAGES) + 1):
        params = TrialParams(depth, 1, "progressive", 1e-3, 1e-4, "adam", 32, 1e-6)
        left = frozen_depth_at(params, epoch=3)
        described = describe_schedule(params, epochs=4)
        assert ("still frozen at the end" in described) == (left > 0)


@pytest.mark.parametrize(
    ("depth", "unfreeze_epoch", "mode", "expected"),
    [
        (3, 2, "progressive", [3, 3, 2, 1, 0, 0]),
        (5, 1, "progressive", [5, 4, 3, 2, 1, 0]),
        (3, 2, "all", [3, 3, 0, 0, 0, 0]),
        (3, None, "all", [3] * 6),
        (0, 0, "progressive", [0] * 6),
    ],
)
def test_frozen_depth_at(depth: int, unfreeze_epoch: int | None, mode: str, expected: list) -> None:
    params = TrialParams(depth, unfreeze_epoch, mode, 1e-3, 1e-4, "adam", 32, 1e-6)
    schedule = Schedule(depth, unfreeze_epoch, mode)
    assert [frozen_depth_at(params, epoch) for epoch in range(6)] == expected
    assert [frozen_depth_at(schedule, epoch) for epoch in range(6)] == expected
