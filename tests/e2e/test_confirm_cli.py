"""`tuner confirm` and `export-best --confirmed` through the real CLI, after a tiny search."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.tuner_cli import run_tuner

pytestmark = pytest.mark.slow


def test_confirm_then_export_the_winner_by_mean(searched: Path) -> None:
    result = run_tuner(searched, "confirm", "--top", "2", "--seeds", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "4 run(s) to go" in result.stdout
    assert "★ #" in result.stdout and "mean" in result.stdout
    assert "--confirmed" in result.stdout  # the next step

    again = run_tuner(searched, "confirm", "--top", "2", "--seeds", "2")
    assert again.returncode == 0 and "0 run(s) to go" in again.stdout  # nothing re-run

    exported = run_tuner(searched, "export-best", "--confirmed", "--out", "confirmed")
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert "confirmed winner:" in exported.stdout
    metrics = json.loads((searched / "confirmed" / "metrics.json").read_text())
    assert len(metrics["confirmation"]["seed_val_accuracies"]) == 2
    assert "Confirmed with 2 fresh seeds" in (searched / "confirmed" / "MODEL_CARD.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["confirm", "--seeds", "0"], "--top and --seeds must be at least 1"),
        (["confirm", "--study", "nope"], "study 'nope' is not in this storage"),
        (["export-best", "--confirmed", "--trial", "1", "--out", "x"], "drop --trial"),
    ],
)
def test_confirm_refuses_bad_input_in_one_line(
    searched: Path, args: list[str], message: str
) -> None:
    result = run_tuner(searched, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
