"""The report's figures on hand-made trials in a real Optuna study: styles, counts, skips."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from tuner.results.figures import study_figures

COMPLETE, PRUNED = TrialState.COMPLETE, TrialState.PRUNED

_SPACE = {
    "freeze_depth": IntDistribution(0, 5),
    "unfreeze_epoch": CategoricalDistribution(["never", 1]),
    "head_lr": FloatDistribution(1e-4, 3e-2, log=True),
}


def _study(*trials: tuple[dict, list[float], TrialState]) -> optuna.Study:
    """A study whose trials carry the user attributes tuner's objective writes."""
    study = optuna.create_study(direction="maximize")
    for params, curve, state in trials:
        study.enqueue_trial(params)
        trial = study.ask({k: v for k, v in _SPACE.items() if k in params})
        for epoch, value in enumerate(curve):
            trial.report(value, epoch)
        depth = params["freeze_depth"]
        trial.set_user_attr("params", {"unfreeze_epoch": None, **params})
        trial.set_user_attr("val_accuracy", curve)
        trial.set_user_attr("epoch_seconds", [1.0 + 0.5 * (5 - depth)] * len(curve))
        trial.set_user_attr("frozen_depth", [depth] * len(curve))
        study.tell(trial, max(curve) if state == COMPLETE else None, state=state)
    return study


@pytest.fixture(scope="module")
def figures() -> dict:
    study = _study(
        ({"freeze_depth": 0, "head_lr": 1e-3}, [0.5, 0.8], COMPLETE),
        ({"freeze_depth": 5, "unfreeze_epoch": "never", "head_lr": 1e-2}, [0.3], PRUNED),
        ({"freeze_depth": 5, "unfreeze_epoch": 1, "head_lr": 3e-3}, [0.4, 0.7], COMPLETE),
        ({"freeze_depth": 5, "unfreeze_epoch": 1, "head_lr": 2e-4}, [0.6, 0.9], COMPLETE),
    )
    return {f.name: f for f in study_figures(study, epochs=2)}


def test_pruned_curves_are_dashed_red_and_complete_ones_solid(figures: dict) -> None:
    curves = figures["curves"]
    styles = {t.name: (t.line.dash, t.line.color) for t in curves.plotly.data if t.x != (None,)}
    assert styles["trial #1"] == ("dash", "#d62728")
    assert styles["trial #0"] == ("solid", "#1f77b4")
    lines = curves.matplotlib.axes[0].get_lines()
    drawn = [line.get_linestyle() for line in lines if len(line.get_xdata())]
    assert sorted(drawn) == ["-", "-", "-", "--"]  # three complete trials, one pruned
    legend = [text.get_text() for text in curves.matplotlib.axes[0].get_legend().get_texts()]
    assert legend == ["complete", "pruned"]


def test_heatmap_keeps_the_best_of_each_cell_and_counts_trials(figures: dict) -> None:
    heatmap = figures["freeze_heatmap"].plotly.data[0]
    assert heatmap.x[:2] == ("never", "epoch 0")
    assert heatmap.text[5][2] == "0.900 (n=2)"  # depth 5, unfrozen at epoch 1: the better one
    assert heatmap.text[0][0] == "0.800 (n=1)"  # nothing frozen sits in the "never" column
    assert heatmap.text[5][0] == ""  # the depth-5 "never" trial was pruned: not counted


def test_epoch_time_groups_epochs_by_frozen_depth(figures: dict) -> None:
    boxes = figures["epoch_time"].plotly.data
    assert [b.name for b in boxes] == ["0 frozen (n=2)", "5 frozen (n=5)"]
    assert list(boxes[1].y) == [1.0] * 5


def test_parallel_coordinates_mark_parameters_a_trial_did_not_sample(figures: dict) -> None:
    axis_labels = [t.get_text() for t in figures["parallel"].matplotlib.axes[0].get_xticklabels()]
    assert axis_labels == ["freeze_depth", "unfreeze_epoch", "head_lr (log)", "val accuracy"]
    annotations = {a.get_text() for a in figures["parallel"].matplotlib.axes[0].texts}
    assert "n/a" in annotations  # trial 0 froze nothing: no unfreeze epoch was sampled


def test_figures_a_study_cannot_support_say_why_instead_of_failing() -> None:
    same = {"freeze_depth": 0, "head_lr": 1e-3}
    study = _study((same, [0.5, 0.6], COMPLETE), (same, [0.5, 0.7], COMPLETE))
    figures = {f.name: f for f in study_figures(study, epochs=2)}
    assert figures["importances"].skipped.startswith("not computable yet")
    assert figures["parallel"].skipped.startswith("needs at least 2 complete trials with different")
    assert figures["importances"].plotly is None and figures["importances"].matplotlib is None
    assert figures["history"].skipped is None and figures["curves"].skipped is None


def test_a_log_axis_with_a_zero_among_its_values_is_drawn_linear() -> None:
    """weight_decay: {choices: [0.0, 1e-4]} has no log10 of 0 to draw (it crashed)."""
    _SPACE["weight_decay"] = CategoricalDistribution([0.0, 1e-4])
    try:
        study = _study(
            ({"freeze_depth": 0, "head_lr": 1e-3, "weight_decay": 0.0}, [0.5, 0.8], COMPLETE),
            ({"freeze_depth": 2, "head_lr": 3e-3, "weight_decay": 1e-4}, [0.4, 0.7], COMPLETE),
        )
        figures = {f.name: f for f in study_figures(study, epochs=2)}
    finally:
        del _SPACE["weight_decay"]
    labels = [t.get_text() for t in figures["parallel"].matplotlib.axes[0].get_xticklabels()]
    assert "weight_decay" in labels and "weight_decay (log)" not in labels
    assert "head_lr (log)" in labels
