"""What a recipe is: describing it in words, and which stages train in which epoch."""

from __future__ import annotations

import pytest

from tuner.recipe import STAGES, Schedule, TrialParams, describe_schedule, frozen_depth_at


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
