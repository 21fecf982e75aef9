"""Warm start on real studies in real SQLite: what it takes from earlier studies, what it
queues once, and how summaries, reports and notes mark its trials."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from optuna.trial import TrialState, create_trial

from tests.conftest import tiny_context
from tuner.errors import TunerError
from tuner.recipe import TrialParams
from tuner.results import report, tables
from tuner.search import attrs, notes, warm_start
from tuner.search import study as study_mod
from tuner.search.storage import open_storage
from tuner.search.warm_start import Source, WarmStart

A = TrialParams(
    freeze_depth=2, unfreeze_epoch=1, unfreeze_mode="all", head_lr=3e-3, backbone_lr=1e-4,
    optimizer="adamw", batch_size=32, weight_decay=1e-4,
)  # fmt: skip
B = dataclasses.replace(A, head_lr=1e-2, optimizer="sgd")
C = dataclasses.replace(A, freeze_depth=0, unfreeze_epoch=None, head_lr=2e-4)


def _complete(
    pinned: study_mod.PinnedStudy, recipe: TrialParams, right: int, marks: dict | None = None
) -> None:
    """A complete trial of ``recipe`` that got the first ``right`` of 100 val images right."""
    correct = np.arange(100) < right
    user_attrs = {
        attrs.PARAMS: dataclasses.asdict(recipe),
        attrs.VAL_CORRECT: attrs.record_val_correct(correct),
        **(marks or {}),
    }
    trial = create_trial(state=TrialState.COMPLETE, value=right / 100, user_attrs=user_attrs)
    pinned.study.add_trial(trial)


@pytest.fixture
def earlier(tmp_path: Path, tiny_data) -> dict[str, study_mod.PinnedStudy]:
    """Two earlier studies in one SQLite file: pets (A 0.9, B 0.8, C 0.7) and birds (A 0.95)."""
    made = {}
    for name, trials in {"pets": [(A, 90), (B, 80), (C, 70)], "birds": [(A, 95)]}.items():
        made[name], _ = tiny_context(tmp_path, tiny_data, f"search.study={name}")
        for recipe, right in trials:
            _complete(made[name], recipe, right)
    return made


def _new_study(tmp_path: Path, tiny_data, *overrides: str) -> study_mod.PinnedStudy:
    return tiny_context(tmp_path, tiny_data, "search.study=new", *overrides)[0]


def _waiting(pinned: study_mod.PinnedStudy) -> list[str]:
    trials = pinned.study.get_trials(states=(TrialState.WAITING,))
    return [t.user_attrs[attrs.WARM_START] for t in trials]


def test_the_best_of_each_study_is_queued_once_in_order(
    earlier: dict, tmp_path: Path, tiny_data
) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'unit.db'}")
    request = WarmStart(("pets", "birds"), top=2)
    new = _new_study(tmp_path, tiny_data, "search.trials=1")
    plan = warm_start.plan(request, new.config, storage, "sqlite:///unit.db")
    assert [str(seed.source) for seed in plan.seeds] == ["pets#0", "pets#1", "birds#0"]
    said: list[str] = []
    warm_start.enqueue(new, plan, {}, said.append)
    assert _waiting(new) == ["pets#0", "pets#1"]
    assert "warm start: birds #0 skipped: the same recipe as warm start: pets #0" in said[2]
    assert said[3] == "enqueued 2 warm-start recipes from pets, birds as the next trials."
    assert said[4].startswith("note: the budget (--trials 1) runs only 1 of the 2 queued trials")


def test_a_recipe_the_space_cannot_express_is_skipped_with_the_reason(
    earlier: dict, tmp_path: Path, tiny_data
) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'unit.db'}")
    new = _new_study(tmp_path, tiny_data, "space.optimizer={choices: [adamw, adam]}")
    plan = warm_start.plan(WarmStart(("pets",)), new.config, storage, "sqlite:///unit.db")
    assert plan.skipped == ("warm start: pets #1 skipped: space.optimizer does not allow 'sgd'",)
    said: list[str] = []
    warm_start.enqueue(new, plan, {"classic recipe 'c'": dict(plan.seeds[1].params)}, said.append)
    assert _waiting(new) == ["pets#0"]
    assert said[2] == (
        "warm start: pets #2 skipped: the same recipe as classic recipe 'c', queued already"
    )


def test_a_missing_study_names_the_option_and_the_studies_there(
    earlier: dict, tmp_path: Path, tiny_data
) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'unit.db'}")
    new = _new_study(tmp_path, tiny_data)
    url = "postgresql+psycopg://tuner:s3cret@db.example/tuner"  # as printed: no password
    with pytest.raises(TunerError) as raised:
        warm_start.plan(WarmStart(("pets", "cats")), new.config, storage, url)
    message = str(raised.value)
    assert message.startswith("--warm-start cats: no such study in postgresql+psycopg://tuner:***@")
    assert "(studies there: pets, birds, new)" in message and "s3cret" not in message


@pytest.mark.parametrize(
    ("given", "error"),
    [
        (("pets,", None, None), "give study names separated by commas"),
        ((None, "sqlite:///a.db", None), "go with --warm-start STUDY"),
        ((None, None, 2), "go with --warm-start STUDY"),
        (("pets", None, 0), "--warm-start-top 0: must be at least 1."),
    ],
)
def test_bad_options_are_refused(given: tuple, error: str) -> None:
    with pytest.raises(TunerError, match=error):
        WarmStart.parse(*given)


def test_options_parse_into_names_once_each() -> None:
    assert WarmStart.parse(None, None, None) is None
    assert WarmStart.parse(" pets, birds,pets", None, None) == WarmStart(("pets", "birds"), None, 3)
    source = Source("lab#2", 12)  # a study name may hold a '#'
    stored = create_trial(state=TrialState.COMPLETE, value=0.5,
                          user_attrs={attrs.WARM_START: str(source)})  # fmt: skip
    assert Source.of(stored) == source and source.title == "warm start: lab#2 #12"


def test_summaries_reports_and_notes_mark_warm_starts(tmp_path: Path, tiny_data) -> None:
    pinned, _ = tiny_context(tmp_path, tiny_data)
    _complete(pinned, C, 80, {attrs.RECIPE: "fine_tune"})
    _complete(pinned, A, 90, {attrs.WARM_START: "pets#7"})
    _complete(pinned, B, 85)
    study = pinned.study
    assert list(tables.trials_table(study)["recipe"]) == ["fine_tune", "warm start: pets #7", ""]
    comparison = tables.recipe_comparison(study).splitlines()
    assert comparison[0] == (
        "classic recipes and warm starts vs the best trial (#1), on the validation images:"
    )
    assert "warm start: pets #7" in comparison[2] and "the best trial itself" in comparison[2]
    assert report.recipe_verdict(study) == (
        "The best trial is warm start: pets #7 (#1): not beaten yet."
    )
    results = report.results_table(study, pinned.config)
    assert list(results["setup"]) == ["classic: fine-tune from the start", "warm start: pets #7",
                                      "search"]  # fmt: skip
    note = notes.trial_note(study, study.trials[1], pinned.config)
    assert "**Warm start:** the recipe of trial #7 of study `pets`" in note
