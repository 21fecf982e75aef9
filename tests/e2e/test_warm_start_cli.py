"""`tuner search --warm-start` through the real command line: a second study starts from what
won the first, in the same storage or another SQLite file."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from pathlib import Path

import optuna
import pandas as pd
import pytest

from tests.e2e.tuner_cli import TINY_STUDY, run_tuner
from tuner.search import attrs
from tuner.search import study as study_mod
from tuner.search.storage import open_storage

pytestmark = pytest.mark.slow

NO_PRUNING = ("--set", "search.pruner=none")  # every source trial completes: a fixed ranking


def _pinned(folder: Path, name: str, db: str = "tuner.db") -> study_mod.PinnedStudy:
    return study_mod.load_pinned(open_storage(f"sqlite:///{folder / db}"), name)


@pytest.fixture(scope="module")
def pets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose tuner.db holds study 'pets': its 3 classic recipes and 1 sampled trial."""
    folder = tmp_path_factory.mktemp("warm")
    (folder / "tiny.yaml").write_text(TINY_STUDY)
    result = run_tuner(
        folder, "search", "tiny.yaml", "--study", "pets", "--trials", "4", *NO_PRUNING
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


@pytest.fixture(scope="module")
def flowers(pets: Path) -> tuple[Path, str]:
    """Study 'flowers', warm-started from every trial of 'pets'; the search's output."""
    result = run_tuner(
        pets, "search", "tiny.yaml", "--study", "flowers", "--trials", "5", *NO_PRUNING,
        "--warm-start", "pets", "--warm-start-top", "4",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return pets, result.stdout


def test_warm_starts_run_right_after_the_classic_recipes_with_the_source_recipes(
    flowers: tuple[Path, str],
) -> None:
    folder, out = flowers
    pets, new = _pinned(folder, "pets"), _pinned(folder, "flowers")
    sampled = pets.study.trials[3]  # pets' classic recipes are flowers' own: queued once
    titles = ("feature extraction", "early unfreeze", "fine-tune from the start")
    for number, title in enumerate(titles):
        skipped = f"warm start: pets #{number} skipped: the same recipe as classic recipe {title!r}"
        assert skipped in out
    assert f"warm start: pets #3 (val accuracy {sampled.value:.4f} there) queued: " in out
    assert "enqueued 1 warm-start recipe from pets as the next trials." in out
    trials = new.study.trials
    assert [attrs.RECIPE in t.user_attrs for t in trials] == [True, True, True, False, False]
    assert [t.user_attrs.get(attrs.WARM_START) for t in trials] == [None] * 3 + ["pets#3", None]
    assert attrs.trial_params(trials[3], new.config.space) == attrs.trial_params(
        sampled, pets.config.space
    )
    for source, trial in zip(pets.study.trials[:3], trials[:3], strict=True):  # same recipes
        assert attrs.trial_params(trial, new.config.space) == attrs.trial_params(
            source, pets.config.space
        )


def test_the_summary_and_the_report_mark_the_warm_start(flowers: tuple[Path, str]) -> None:
    folder, out = flowers
    assert "classic recipes and warm starts vs the best trial (#" in out
    assert re.search(r"^  #3 +warm start: pets #3 +0\.\d{4}   (best is|the best)", out, re.M), out
    top_trials = out.split("top trials:")[1]
    assert re.search(r"^ +3 +complete .* warm start: pets #3 ", top_trials, re.M), top_trials
    result = run_tuner(folder, "report", "--study", "flowers", "--out", "report")
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(folder / "report" / "results.csv")
    assert list(table["setup"])[:4] == [
        "classic: feature extraction",
        "classic: early unfreeze",
        "classic: fine-tune from the start",
        "warm start: pets #3",
    ]
    assert list(table["trial"]).count(3) == 1  # not listed again among the search trials
    assert "<tr class='warm" in (folder / "report" / "report.html").read_text()
    status = run_tuner(folder, "status", "--study", "flowers")
    assert "warm start: pets #3" in status.stdout


def test_a_recipe_outside_the_new_space_is_skipped_with_the_reason(pets: Path) -> None:
    result = run_tuner(
        pets, "search", "tiny.yaml", "--study", "fast", "--trials", "1", *NO_PRUNING,
        "--set", "space.head_lr={low: 0.05, high: 0.1}", "--warm-start", "pets",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for trial in study_mod.ranked_trials(_pinned(pets, "pets").study)[:3]:
        head_lr = trial.user_attrs[attrs.PARAMS]["head_lr"]
        line = f"warm start: pets #{trial.number} skipped: space.head_lr does not allow {head_lr!r}"
        assert line in result.stdout
    assert "enqueued 0 warm-start recipes from pets" in result.stdout
    assert all(attrs.WARM_START not in t.user_attrs for t in _pinned(pets, "fast").study.trials)


def test_warm_start_storage_reads_another_sqlite_file(pets: Path, tmp_path: Path) -> None:
    with (  # a consistent copy, whatever the source's write-ahead log still holds
        contextlib.closing(sqlite3.connect(pets / "tuner.db")) as source,
        contextlib.closing(sqlite3.connect(tmp_path / "earlier.db")) as copy,
    ):
        source.backup(copy)
    (tmp_path / "tiny.yaml").write_text(TINY_STUDY)
    result = run_tuner(
        tmp_path, "search", "tiny.yaml", "--study", "roses", "--trials", "1",
        "--set", "search.baselines=false", "--warm-start", "pets",
        "--warm-start-storage", "sqlite:///earlier.db", "--warm-start-top", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    best = study_mod.ranked_trials(_pinned(tmp_path, "pets", "earlier.db").study)[0]
    assert f"warm start: pets #{best.number} (val accuracy" in result.stdout
    assert optuna.get_all_study_names(f"sqlite:///{tmp_path / 'tuner.db'}") == ["roses"]
    roses = _pinned(tmp_path, "roses")
    (trial,) = roses.study.trials
    assert trial.user_attrs[attrs.WARM_START] == f"pets#{best.number}"
    pets_space = _pinned(tmp_path, "pets", "earlier.db").config.space
    assert attrs.trial_params(trial, roses.config.space) == attrs.trial_params(best, pets_space)


def test_a_missing_study_is_a_clear_error_and_nothing_is_created(pets: Path) -> None:
    result = run_tuner(
        pets, "search", "tiny.yaml", "--study", "lilies", "--warm-start", "pets,nope"
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "--warm-start nope: no such study in sqlite:///tuner.db (studies there: " in (
        result.stderr
    )
    assert "pets" in result.stderr.splitlines()[-1]
    assert "lilies" not in optuna.get_all_study_names(f"sqlite:///{pets / 'tuner.db'}")
    missing_file = run_tuner(
        pets, "search", "tiny.yaml", "--study", "lilies", "--warm-start", "pets",
        "--warm-start-storage", "sqlite:///nowhere.db",
    )  # fmt: skip
    assert missing_file.returncode == 2 and "point --warm-start-storage at" in missing_file.stderr
    assert not (pets / "nowhere.db").exists()


def test_an_existing_study_says_warm_start_seeds_new_studies_only(pets: Path) -> None:
    before = len(_pinned(pets, "pets").study.trials)
    result = run_tuner(pets, "search", "--study", "pets", "--warm-start", "flowers")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--warm-start queues nothing: it only seeds a study this command creates" in (
        result.stdout
    )
    assert len(_pinned(pets, "pets").study.trials) == before
