"""`tuner confirm` on a tiny real study: fresh seeds, resumable plans, statistics, the export."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import optuna
import pytest

from tests.conftest import single_thread, tiny_context
from tuner.errors import TunerError
from tuner.results.export import ExportRequest, export_trial
from tuner.results.tables import confirm_table
from tuner.run.confirm import run_pending
from tuner.run.identity import WorkerIdentity
from tuner.run.workers import JoinRequest, join, run_worker
from tuner.search import attrs, confirm
from tuner.search import study as study_mod
from tuner.search.storage import open_storage


def test_confirm_seeds_are_fresh_distinct_and_stable() -> None:
    seeds = {confirm.confirm_seed(0, c, i, trained=c) for c in range(5) for i in range(5)}
    assert len(seeds) == 25
    assert confirm.confirm_seed(0, 3, 1, 3) == confirm.confirm_seed(0, 3, 1, 3)
    assert confirm.confirm_seed(1, 3, 1, 3) != confirm.confirm_seed(0, 3, 1, 3)
    assert all(confirm.confirm_seed(0, c, 0, trained=c) != 0 + c for c in range(5))  # not its own


def test_a_confirm_seed_is_never_the_seed_its_candidate_trained_with() -> None:
    drawn = confirm.confirm_seed(0, 3, 1, trained=3)
    assert confirm.confirm_seed(0, 3, 1, trained=drawn) != drawn  # however unlikely the meeting


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory: pytest.TempPathFactory, tiny_data) -> tuple:
    """A 3-trial tiny study whose top 2 trials were re-trained with 2 fresh seeds each."""
    folder = tmp_path_factory.mktemp("confirm")
    parent, context = tiny_context(
        folder, tiny_data, "search.trials=3", "search.pruner=none", "search.keep_checkpoints=3"
    )
    url = f"sqlite:///{folder / 'unit.db'}"
    storage = open_storage(url)
    with single_thread():
        run_worker(parent.study, context)
        linked = confirm.open_linked(storage, parent)
        added = confirm.plan(parent, linked, top=2, seeds=2)
        request = JoinRequest(
            linked.study.study_name, url, str(folder / "artifacts"), WorkerIdentity()
        )
        linked, linked_context = join(request)
        run_pending(linked, linked_context)
    return folder, storage, parent, linked, added


def test_the_top_trials_are_retrained_with_their_params_and_fresh_seeds(confirmed: tuple) -> None:
    _, _, parent, linked, added = confirmed
    assert added == 4
    top = [t.number for t in study_mod.ranked_trials(parent.study)[:2]]
    runs = linked.study.get_trials()
    assert len(runs) == 4 and all(t.state.name == "COMPLETE" for t in runs)
    for run in runs:
        candidate = run.user_attrs[attrs.CONFIRMS]
        assert candidate in top
        assert run.params == parent.study.trials[candidate].params
        index = run.user_attrs[attrs.SEED_INDEX]
        trained = parent.study.trials[candidate].user_attrs[attrs.SEED]
        assert run.user_attrs[attrs.SEED] == confirm.confirm_seed(0, candidate, index, trained)
        assert run.user_attrs[attrs.SEED] != trained
    assert linked.config.search.pruner == "none"
    assert linked.config.search.confirm_top == 0  # a confirm study never confirms itself


def test_results_have_mean_and_spread_and_a_verdict(confirmed: tuple) -> None:
    _, _, parent, linked, _ = confirmed
    confirmation = confirm.results(parent, linked)
    assert len(confirmation.results) == 2
    assert all(len(r.values) == 2 for r in confirmation.results)
    assert confirmation.results[0].mean >= confirmation.results[1].mean
    winner = confirmation.winner
    assert winner is confirmation.results[0]
    assert winner.std >= 0 and min(winner.values) <= winner.mean <= max(winner.values)
    assert f"#{winner.trial}" in confirmation.verdict()
    # seeds and images both count: a bootstrap interval, in images and points
    assert all(len(r.correct) == 2 for r in confirmation.results)
    assert "images on average; 95% interval " in confirmation.verdict()
    table = confirm_table(confirmation)
    assert f"★ #{winner.trial}" in table and confirmation.verdict() in table


def test_a_second_plan_adds_only_what_is_missing(confirmed: tuple) -> None:
    _, _, parent, linked, _ = confirmed
    assert confirm.plan(parent, linked, top=2, seeds=2) == 0
    assert confirm.pending_runs(linked) == 0
    assert confirm.plan(parent, linked, top=2, seeds=3) == 2
    assert confirm.pending_runs(linked) == 2
    with pytest.raises(TunerError, match="at least 1"):
        confirm.plan(parent, linked, top=0, seeds=2)


def test_the_confirm_study_does_not_make_the_storage_ambiguous(confirmed: tuple) -> None:
    storage = confirmed[1]
    assert set(study_mod.study_names(storage)) == {"unit", "unit-confirm"}
    assert study_mod.only_study(storage, required=True) == "unit"


def test_confirmed_export_ships_the_winners_best_run(confirmed: tuple) -> None:
    folder, storage, parent, linked, _ = confirmed
    confirm.plan(parent, linked, top=2, seeds=2)  # back to the 2-seed request
    chosen = confirm.confirmed_export(storage, parent)
    winner = confirm.results(parent, linked).winner
    assert chosen.summary["candidate_trial"] == winner.trial
    assert chosen.summary["seed_val_accuracies"] == list(winner.values)
    runs = confirm.winner_runs(parent, linked, winner.trial)
    assert all(study_mod.has_checkpoint(p.study, t) for p, t in runs)  # the plan kept them all
    target = confirm.mean_curve_best_epoch([t for _, t in runs])
    assert chosen.summary["mean_curve_best_epoch"] == target
    shipped = {(p.study.study_name, t.number): t for p, t in runs}[
        (chosen.pinned.study.study_name, chosen.trial)
    ]
    nearest = min(abs(t.user_attrs["best_epoch"] - target) for _, t in runs)
    assert abs(shipped.user_attrs["best_epoch"] - target) == nearest  # no run's epoch is nearer
    out = folder / "best"
    with single_thread():
        export_trial(
            chosen.pinned,
            parent_store(folder),
            ExportRequest(out, confirmation=chosen.summary),
            trial_number=chosen.trial,
        )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["confirmation"]["mean"] == pytest.approx(winner.mean)
    assert "Confirmed with 2 fresh seeds" in (out / "MODEL_CARD.md").read_text()


def test_exporting_unconfirmed_says_what_to_run(make_context, tmp_path: Path) -> None:
    pinned, _ = make_context()
    storage = open_storage(f"sqlite:///{tmp_path / 'unit.db'}")
    with pytest.raises(TunerError, match="tuner confirm --study unit"):
        confirm.confirmed_export(storage, pinned)


def parent_store(folder: Path):
    from tuner.search.storage import artifact_store

    return artifact_store(str(folder / "artifacts"))


def test_export_best_takes_the_confirmed_winner_only_while_the_confirmation_holds(
    confirmed: tuple,
) -> None:
    _, storage, parent, linked, _ = confirmed
    confirm.plan(parent, linked, top=2, seeds=2)  # the complete 2-seed request
    chosen = confirm.default_export(storage, parent)
    assert chosen is not None
    assert chosen.summary == confirm.confirmed_export(storage, parent).summary

    confirm.plan(parent, linked, top=2, seeds=3)  # a run is missing: not judged yet
    assert confirm.results(parent, linked).missing == 2
    assert confirm.default_export(storage, parent) is None

    confirm.plan(parent, linked, top=2, seeds=2)
    best = study_mod.ranked_trials(parent.study)[0]
    assert best.value < 1.0
    parent.study.add_trial(  # the search went on and found a better trial: now stale
        optuna.trial.create_trial(
            params=best.params,
            distributions=best.distributions,
            value=1.0,
            user_attrs=dict(best.user_attrs),
        )
    )
    assert confirm.results(parent, linked).complete
    assert confirm.default_export(storage, parent) is None


def test_the_search_header_says_what_its_confirm_will_run(make_context) -> None:
    search = make_context()[0].config.search
    assert search.confirm_top == 3 and search.confirm_seeds == 2  # the shipped defaults
    assert "the top 3 re-run on 2 fresh seed(s) each (6 full runs more)" in confirm.describe(search)
    assert confirm.describe(replace(search, confirm_top=0)).startswith("off (")


def test_the_run_shipped_is_nearest_the_mean_curves_best_epoch_not_the_luckiest() -> None:
    study = optuna.create_study(direction="maximize")
    for curve in ([0.50, 0.80, 0.70], [0.50, 0.70, 0.90], [0.50, 0.84, 0.70]):
        best = max(range(len(curve)), key=curve.__getitem__)
        attrs_ = {"val_accuracy": curve, "best_epoch": best}
        study.add_trial(optuna.trial.create_trial(value=curve[best], user_attrs=attrs_))
    runs = study.trials
    lucky, better = runs[1], runs[2]  # lucky: the best value, at an epoch not best on average
    assert confirm.mean_curve_best_epoch(runs) == 1
    shipped = confirm.nearest_epoch_run([("parent", t) for t in runs], 1)
    assert shipped[1] is better  # nearest epoch, higher value among equals
    assert confirm.nearest_epoch_run([("parent", lucky)], 1)[1] is lucky  # the only one kept
