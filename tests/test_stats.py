"""Intervals and paired tests, checked against hand-worked cases and scipy's exact binomial test."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from tuner import stats


def test_mcnemar_on_a_constructed_pair_of_prediction_vectors() -> None:
    # 359 images: both right on 350, both wrong on 5; only A right on 3, only B right on 1
    a = np.array([True] * 350 + [False] * 5 + [True] * 3 + [False] * 1)
    b = np.array([True] * 350 + [False] * 5 + [False] * 3 + [True] * 1)
    comparison = stats.PairedComparison.of(a, b)
    assert (comparison.a_only, comparison.b_only) == (3, 1)
    assert comparison.images == 2 and comparison.points == pytest.approx(100 * 2 / 359)
    assert comparison.p_value == pytest.approx(0.625)  # 2 * (1 + 4) / 16
    assert not comparison.significant
    assert comparison.evidence() == "2 of 359 images; not significant, p = 0.62"


def test_a_lopsided_disagreement_is_significant() -> None:
    a = np.array([True] * 12 + [True] * 100)
    b = np.array([False] * 12 + [True] * 100)
    comparison = stats.PairedComparison.of(a, b)
    assert comparison.p_value == pytest.approx(2 / 2**12)
    assert comparison.significant
    assert comparison.evidence() == "12 of 112 images; p < 0.001"


@pytest.mark.parametrize(("a_only", "b_only"), [(0, 0), (1, 0), (5, 5), (7, 2), (0, 9), (30, 14)])
def test_mcnemar_is_the_exact_binomial_test_on_the_discordant_images(
    a_only: int, b_only: int
) -> None:
    expected = 1.0 if a_only + b_only == 0 else binomtest(a_only, a_only + b_only).pvalue
    assert stats.mcnemar_p(a_only, b_only) == pytest.approx(expected)


def test_wilson_interval_matches_the_textbook_case() -> None:
    low, high = stats.Accuracy(8, 10).interval  # Wilson's 95% interval for 8 of 10
    assert (low, high) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    assert stats.Accuracy(10, 10).interval[1] == pytest.approx(1.0)
    assert stats.Accuracy(0, 10).interval[0] == pytest.approx(0.0)
    assert stats.Accuracy(349, 360).describe() == "0.9694 (349 of 360; 95% CI 0.9461-0.9829)"


def test_seed_comparisons_see_both_noises() -> None:
    rng = np.random.default_rng(0)
    truth = rng.random(400)
    same_a = rng.random((3, 400)) < truth  # two candidates that are one and the same model
    same_b = rng.random((3, 400)) < truth
    assert not stats.compare_seeds(same_a, same_b).significant
    better = np.ones((3, 400), dtype=bool)
    worse = rng.random((3, 400)) < 0.7
    found = stats.compare_seeds(better, worse)
    assert (
        found.significant
        and found.low > 20
        and found.points == pytest.approx(100 * (1 - worse.mean()))
    )
    assert "beyond noise" in found.evidence()


def test_correctness_vectors_round_trip_through_text() -> None:
    vector = np.random.default_rng(1).random(1001) < 0.9
    text = stats.pack_correct(vector)
    assert len(text) <= 4 * (1001 // 8 + 1) // 3 + 4  # a bit per image, in base64
    assert np.array_equal(stats.unpack_correct(text, 1001), vector)
