"""`tuner report` on a tiny real study: files, figures, self-containment, the results table."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from plotly.offline import get_plotlyjs

from tests.conftest import single_thread
from tuner.errors import TunerError
from tuner.results import tables as reporting
from tuner.results.export import ExportRequest, export_trial
from tuner.results.report import format_results, results_table, write_report
from tuner.run.workers import run_worker
from tuner.search import study as study_mod
from tuner.search.space import recipe_trials
from tuner.search.storage import artifact_store

FIGURES = ("history", "curves", "importances", "parallel", "freeze_heatmap", "epoch_time")


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory, tiny_data) -> tuple:
    """A 6-trial tiny study whose first three trials are the classic recipes, reported."""
    from tests.conftest import tiny_context

    folder = tmp_path_factory.mktemp("report")
    pinned, context = tiny_context(
        folder,
        tiny_data,
        "search.trials=6",
        "search.pruner=none",
        "space.freeze_depth={choices: [0, 2, 5]}",
    )
    runnable, _ = recipe_trials(pinned.config.space, pinned.config.train.epochs)
    for recipe, params in runnable:
        pinned.study.enqueue_trial(params, user_attrs={"recipe": recipe.name})
    with single_thread():
        run_worker(pinned.study, context)
    return pinned, write_report(pinned, folder / "out")


def test_every_figure_is_a_real_png(reported: tuple) -> None:
    _, files = reported
    assert {p.stem for p in files.pngs} == set(FIGURES), files.skipped
    for path in files.pngs:
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.width > 400 and image.height > 200
        assert path.stat().st_size > 10_000  # axes, labels and data, not an empty canvas


def test_html_is_self_contained_and_shows_the_study(reported: tuple) -> None:
    pinned, files = reported
    page = files.html.read_text()
    assert page.count(get_plotlyjs()) == 1  # plotly.js inlined once: the page opens offline
    # plotly.js itself names a CDN default (topojson, only for geographic maps, which the report
    # never draws); nothing else on the page may point at the network.
    ours = page.replace(get_plotlyjs(), "")
    assert "<script src" not in ours and "https://cdn" not in ours and "<link" not in ours
    assert page.count('class="plotly-graph-div"') == len(FIGURES)
    assert f"Study {pinned.study.study_name}" in page
    assert "tuner export-best --study unit" in page
    assert page.count("<tr class='recipe") == 3  # the three classic recipes, marked


def test_results_table_marks_recipes_and_the_best(reported: tuple) -> None:
    pinned, files = reported
    table = files.results
    setups = list(table["setup"])
    assert setups[:3] == [
        "classic: feature extraction",
        "classic: early unfreeze",
        "classic: fine-tune from the start",
    ]
    best = study_mod.ranked_trials(pinned.study)[0]
    starred = table[table["best"] == "★"]
    assert list(starred["trial"]) == [best.number]
    assert starred["vs best (points)"].iloc[0] == 0.0
    complete = table[table["state"] == "complete"]
    assert (complete["vs best (points)"] <= 0).all()
    assert table.loc[0, "freeze / unfreeze"] == "whole backbone frozen throughout"
    assert "classic: feature extraction" in format_results(table)
    assert pd.read_csv(files.results_csv)["trial"].tolist() == table["trial"].tolist()


def test_the_verdict_says_by_how_much_the_best_beats_each_recipe(reported: tuple) -> None:
    pinned, files = reported
    margins = reporting.recipe_margins(pinned.study)
    assert len(margins) == 3
    best = study_mod.ranked_trials(pinned.study)[0]
    if "recipe" in best.user_attrs:
        assert files.verdict.startswith("The best trial is a classic recipe")
    else:
        assert files.verdict.startswith(f"The best search trial, #{best.number}, beats ")
        for margin in margins:
            assert f"{margin.recipe.title} (#{margin.trial.number}) by {margin.points:.1f}" in (
                files.verdict
            )
    assert html.escape(files.verdict) in files.html.read_text()
    assert re.search(r"by \d+\.\d \(\d+ of 50 images; ", files.verdict), files.verdict


def test_the_table_gives_each_gap_in_images_with_its_p_value_and_the_test_once_exported(
    reported: tuple, tmp_path: Path
) -> None:
    pinned, files = reported
    table = files.results
    best = table[table["best"] == "★"].iloc[0]
    assert best["vs best (images)"] == "+0 of 50" and pd.isna(best["p (McNemar)"])
    others = table[(table["best"] != "★") & (table["state"] == "complete")]
    assert others["vs best (images)"].str.match(r"^-\d+ of 50$").all()
    assert others["p (McNemar)"].between(0, 1).all()
    assert re.fullmatch(r"0\.\d{4}-[01]\.\d{4}", best["95% CI"])
    page = files.html.read_text()
    assert "so it is optimistic" in page and "test acc" in table and table["test acc"].isna().all()

    store = artifact_store(str(files.folder.parent / "artifacts"))
    with single_thread():
        exported = export_trial(pinned, store, ExportRequest(tmp_path / "best"))
    again = write_report(pinned, tmp_path / "again")
    tested = again.results[again.results["trial"] == exported.trial_number]["test acc"]
    assert tested.iloc[0] == pytest.approx(exported.test.accuracy.value)
    assert "Held-out test accuracy, measured once by tuner export-best: " in again.html.read_text()


def test_one_complete_trial_draws_what_it_can(make_context, tmp_path: Path) -> None:
    pinned, context = make_context("search.trials=1", "search.pruner=none")
    with single_thread():
        run_worker(pinned.study, context)
    files = write_report(pinned, tmp_path / "one")
    assert {p.stem for p in files.pngs} == set(FIGURES) - {"importances", "parallel"}
    assert sorted(s.split(":")[0] for s in files.skipped) == ["importances", "parallel"]
    page = files.html.read_text()
    assert page.count("Not drawn: needs at least 2 complete trials") == 2
    assert page.count(get_plotlyjs()) == 1  # inlined with the first figure that is drawn
    assert files.verdict.startswith("No classic recipe completed")  # none enqueued here
    assert len(pd.read_csv(files.trials_csv)) == 1


def test_trials_csv_has_every_trial(reported: tuple) -> None:
    pinned, files = reported
    trials = pd.read_csv(files.trials_csv)
    assert sorted(trials["trial"]) == [t.number for t in pinned.study.trials]
    assert {"val_acc", "freeze_depth", "sec_per_epoch"} <= set(trials.columns)


def test_a_study_without_complete_trials_reports_what_it_cannot_draw(
    make_context, tmp_path: Path
) -> None:
    pinned, _ = make_context()
    files = write_report(pinned, tmp_path / "empty")
    assert files.pngs == ()
    assert any(s.startswith("importances: needs at least 2") for s in files.skipped)
    assert "Not drawn" in files.html.read_text()
    assert results_table(pinned.study, pinned.config).empty


def test_out_must_not_be_a_file(make_context, tmp_path: Path) -> None:
    pinned, _ = make_context()
    target = tmp_path / "taken"
    target.write_text("keep me")
    with pytest.raises(TunerError, match=r"--out .*taken: is a file"):
        write_report(pinned, target)
    assert target.read_text() == "keep me"
