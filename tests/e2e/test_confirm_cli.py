"""`tuner confirm` and `export-best --confirmed` through the real CLI, after a tiny search."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
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


def test_search_confirms_its_top_trials_and_export_best_ships_the_winner(
    tiny_study_file: Path,
) -> None:
    folder = tiny_study_file.parent
    confirming = ("--set", "search.confirm_top=2", "--set", "search.confirm_seeds=1")
    first = run_tuner(folder, "search", "tiny.yaml", "--trials", "3", *confirming)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "confirm:   once the 3 trials are done, the top 2 re-run on 1 fresh seed" in first.stdout
    assert "confirming: the top 2 trials re-run on 1 fresh seeds each (2 runs" in first.stdout
    winner = re.search(r"export-best exports the confirmed winner, trial #(\d+)\.", first.stdout)
    assert winner is not None and "★ #" in first.stdout

    exported = run_tuner(folder, "export-best", "--out", "best")
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert "the search's confirm runs chose it" in exported.stdout
    metrics = json.loads((folder / "best" / "metrics.json").read_text())
    assert metrics["confirmation"]["candidate_trial"] == int(winner[1])

    # a second seed for each, on two worker processes: only the new runs run
    more = (*confirming[:2], "--set", "search.confirm_seeds=2", "--workers", "2")
    second = run_tuner(folder, "search", "tiny.yaml", "--trials", "3", *more)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "(2 runs in study 'tiny-confirm'" in second.stdout
    assert "starting 2 workers" in second.stdout
    storage = f"sqlite:///{folder / 'tuner.db'}"
    runs = optuna.load_study(study_name="tiny-confirm", storage=storage)
    assert len(runs.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 4
    assert len(optuna.load_study(study_name="tiny", storage=storage).get_trials()) == 3


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
