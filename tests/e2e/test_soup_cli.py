"""`tuner export-best --soup K` through the real CLI, after a tiny search (keep_checkpoints 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.tuner_cli import run_tuner

pytestmark = pytest.mark.slow


def test_soup_export_prints_the_soup_beside_the_best_single_trial(searched: Path) -> None:
    result = run_tuner(searched, "export-best", "--soup", "2", "--out", "soup")
    assert result.returncode == 0, result.stderr[-3000:]
    soup = json.loads((searched / "soup" / "config.json").read_text())["soup"]
    best = soup["val"]["best_single_trial"]
    out = result.stdout
    assert f"a soup led by trial #{best} to soup/" in out
    assert out.count("soup: + trial #") == 1  # the one candidate after the best, as it is tried
    assert "  soup of trials " in out and "  BatchNorm statistics: " in out
    assert f"val accuracy: soup {soup['val']['soup']:.4f}, best single trial #{best}" in out
    assert f"    best single trial #{best}: " in out and "95% CI" in out
    assert "  soup vs best single: " in out and "exact McNemar" in out


def test_a_soup_larger_than_keep_checkpoints_is_one_clear_line(searched: Path) -> None:
    result = run_tuner(searched, "export-best", "--soup", "3", "--out", "too-big")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    for fragment in ("--soup 3", "search.keep_checkpoints is 2", "--soup 2 or less",
                     "--set search.keep_checkpoints=3"):  # fmt: skip
        assert fragment in result.stderr, result.stderr
    assert not (searched / "too-big").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--soup", "0"], "argument --soup: '0' is not a whole number of 1 or more"),
        (["--soup", "two"], "argument --soup: 'two' is not a whole number of 1 or more"),
        (["--soup", "2", "--refit"], "drop --refit, or --soup"),
        (["--soup", "2", "--trial", "1", "--confirmed"], "drop --trial and --confirmed, or --soup"),
    ],
)
def test_soup_refuses_what_makes_no_sense(searched: Path, args: list[str], message: str) -> None:
    result = run_tuner(searched, "export-best", *args, "--out", "refused")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr, result.stderr
    assert not (searched / "refused").exists()
