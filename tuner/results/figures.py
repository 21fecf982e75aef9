"""The report's figures: each computed once from the trials, drawn twice.

Plotly draws the interactive copy embedded in report.html; matplotlib draws the PNG, so
PNGs need neither a browser nor kaleido. A figure that the study cannot support yet (no
complete trial, too few for importances) comes back with ``skipped`` saying why.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: never open a window, never need a display

import matplotlib.pyplot as plt
import numpy as np
import optuna
import plotly.graph_objects as go
from matplotlib.ticker import MaxNLocator
from optuna.trial import FrozenTrial, TrialState

from tuner.recipe import DIMENSIONS, RECIPES, STAGES
from tuner.search import attrs
from tuner.search.warm_start import Source

_COMPLETE, _PRUNED, _RECIPE, _WARM = "#1f77b4", "#d62728", "#2ca02c", "#9467bd"
_CURVE_STYLES = {  # (colour, plotly dash, opacity) of a trial's curve by its state
    TrialState.COMPLETE: (_COMPLETE, "solid", 0.9),
    TrialState.PRUNED: (_PRUNED, "dash", 0.55),
}
_STAGE_COUNT = len(STAGES)  # freeze depths run 0..5
_RUNNING_STYLE = ("#999999", "dot", 0.6)
_RECIPE_TITLES = {recipe.name: recipe.title for recipe in RECIPES}
_PARAM_AXES = tuple((name, info.log_axis) for name, info in DIMENSIONS.items())
"""(name, drawn on a log scale) of every dimension; those the same in every trial are left out."""


@dataclass(frozen=True)
class Figure:
    """One figure of the report: its file stem, title, and both renderings (or why not)."""

    name: str
    title: str
    plotly: go.Figure | None = None
    matplotlib: Any = None  # a matplotlib Figure
    skipped: str | None = None

    def save_png(self, folder: Path) -> Path | None:
        if self.matplotlib is None:
            return None
        path = folder / f"{self.name}.png"
        self.matplotlib.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(self.matplotlib)
        return path


def study_figures(study: optuna.Study, epochs: int) -> list[Figure]:
    """The six figures the report shows, in reading order."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    makers: list[tuple[str, str, Callable[[], Figure]]] = [
        ("history", "Optimization history", lambda: _history(study, complete)),
        ("curves", "Validation accuracy per epoch (pruned trials dashed)",
         lambda: _curves(study, trials)),
        ("importances", "Parameter importances", lambda: _importances(study, complete)),
        ("parallel", "Parallel coordinates (colour: val accuracy)",
         lambda: _parallel(study, complete)),
        ("freeze_heatmap", "Best val accuracy by freeze depth and unfreeze epoch (complete trials)",
         lambda: _heatmap(complete, epochs)),
        ("epoch_time", "Seconds per epoch by frozen depth", lambda: _epoch_time(trials)),
    ]  # fmt: skip
    figures = []
    for name, title, make in makers:
        with warnings.catch_warnings():  # "few trials", "experimental": the report says it is early
            warnings.simplefilter("ignore", UserWarning)
            figure = make()
        if figure.matplotlib is not None:
            figure.matplotlib.axes[0].set_title(title)
        if figure.plotly is not None:
            figure.plotly.update_layout(title=None)  # the page's heading names the figure
        figures.append(Figure(name, title, figure.plotly, figure.matplotlib, figure.skipped))
    return figures


def _skip(reason: str) -> Figure:
    return Figure("", "", skipped=reason)


def _history(study: optuna.Study, complete: list[FrozenTrial]) -> Figure:
    if not complete:
        return _skip("no complete trial yet")
    numbers = [t.number for t in complete]
    values = [t.value for t in complete]
    best = np.maximum.accumulate(values)
    pfig = optuna.visualization.plot_optimization_history(study, target_name="val accuracy")
    _plotly_axes(pfig, "trial", "val accuracy")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.scatter(numbers, values, color=_COMPLETE, s=18, label="complete trial")
    ax.step(numbers, best, where="post", color="black", label="best so far")
    for mark in _known_marks(complete):
        mark.draw(pfig, ax)
    _mpl_axes(ax, "trial", "val accuracy")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return Figure("", "", pfig, fig)


@dataclass(frozen=True)
class _Marks:
    """The history's marks of one kind of known recipe's trials, each labelled with its name."""

    name: str
    color: str
    symbols: tuple[str, str]  # plotly's, matplotlib's
    trials: list[FrozenTrial]
    titles: list[str]

    def draw(self, pfig: go.Figure, ax: Any) -> None:
        """Labels alternate above and below: known recipes run one after another."""
        x, y = [t.number for t in self.trials], [t.value for t in self.trials]
        pfig.add_scatter(
            x=x, y=y, mode="markers+text", text=self.titles, name=self.name,
            textposition=["bottom right" if i % 2 else "top right" for i in range(len(x))],
            marker={"color": self.color, "size": 12, "symbol": self.symbols[0]},
        )  # fmt: skip
        ax.scatter(x, y, color=self.color, marker=self.symbols[1], s=50, label=self.name, zorder=3)
        for i, (trial, title) in enumerate(zip(self.trials, self.titles, strict=True)):
            offset = (8, -14) if i % 2 else (8, 8)
            ax.annotate(title, (trial.number, trial.value), xytext=offset,
                        textcoords="offset points", fontsize=8, color=self.color)  # fmt: skip


def _known_marks(complete: list[FrozenTrial]) -> list[_Marks]:
    """The classic recipes' marks, and the warm starts' where the study has any."""
    recipes = [t for t in complete if attrs.RECIPE in t.user_attrs]
    titles = [
        _RECIPE_TITLES.get(t.user_attrs[attrs.RECIPE], t.user_attrs[attrs.RECIPE]) for t in recipes
    ]
    marks = [_Marks("classic recipe", _RECIPE, ("diamond", "D"), recipes, titles)]
    warm = [(t, source) for t in complete if (source := Source.of(t)) is not None]
    if warm:
        trials = [t for t, _ in warm]
        marks.append(_Marks("warm start", _WARM, ("star", "*"), trials, [s.title for _, s in warm]))
    return marks


def _curves(study: optuna.Study, trials: list[FrozenTrial]) -> Figure:
    shown = [
        t
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        and t.user_attrs.get(attrs.VAL_ACCURACY)
    ]
    if not shown:
        return _skip("no finished trial with per-epoch accuracy yet")
    states = {t.number: t.state for t in trials}
    pfig = optuna.visualization.plot_intermediate_values(study)
    for trace in pfig.data:  # Optuna names each trial's trace "Trial<number>"
        number = int(trace.name.removeprefix("Trial"))
        color, dash, opacity = _CURVE_STYLES.get(states[number], _RUNNING_STYLE)
        line = {"color": color, "dash": dash, "width": 1.5}
        trace.update(line=line, marker={"color": color}, opacity=opacity, name=f"trial #{number}")
    for state in (TrialState.COMPLETE, TrialState.PRUNED):  # legend entries, one per state
        color, dash, _ = _CURVE_STYLES[state]
        pfig.add_scatter(x=[None], y=[None], mode="lines", name=state.name.lower(),
                         line={"color": color, "dash": dash}, showlegend=True)  # fmt: skip
    _plotly_axes(pfig, "epoch", "val accuracy")
    pfig.update_xaxes(dtick=1)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for trial in shown:
        curve = trial.user_attrs[attrs.VAL_ACCURACY]
        pruned = trial.state == TrialState.PRUNED
        ax.plot(
            range(len(curve)),
            curve,
            color=_PRUNED if pruned else _COMPLETE,
            linestyle="--" if pruned else "-",
            marker="x" if pruned else ".",
            alpha=0.5 if pruned else 0.85,
            linewidth=1,
        )
    ax.plot([], [], color=_COMPLETE, marker=".", label="complete")
    ax.plot([], [], color=_PRUNED, linestyle="--", marker="x", label="pruned")
    _mpl_axes(ax, "epoch", "val accuracy")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return Figure("", "", pfig, fig)


def _importances(study: optuna.Study, complete: list[FrozenTrial]) -> Figure:
    if len(complete) < 2:
        return _skip(f"needs at least 2 complete trials ({len(complete)} so far)")
    try:  # one seeded evaluator for both drawings: fANOVA's forest is random
        importances = optuna.importance.get_param_importances(study, evaluator=_evaluator())
    except (ValueError, RuntimeError) as exc:
        return _skip(f"not computable yet, the complete trials vary too little ({exc})")
    if not importances:
        return _skip("no parameter varied across the complete trials")
    pfig = optuna.visualization.plot_param_importances(
        study, evaluator=_evaluator(), target_name="val accuracy"
    )
    _plotly_axes(pfig, "importance (share of val accuracy variation)", "")
    names = list(reversed(importances))
    values = [importances[n] for n in names]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.5))
    bars = ax.barh(names, values, color=_COMPLETE)
    ax.bar_label(bars, [f"{v:.2f}" if v >= 0.01 else "<0.01" for v in values], fontsize=8,
                 padding=3)  # fmt: skip
    _mpl_axes(ax, "importance (share of val accuracy variation)", "", legend=False)
    return Figure("", "", pfig, fig)


def _evaluator() -> optuna.importance.FanovaImportanceEvaluator:
    return optuna.importance.FanovaImportanceEvaluator(seed=0)


def _parallel(study: optuna.Study, complete: list[FrozenTrial]) -> Figure:
    axes = [_param_axis(complete, name, log) for name, log in _PARAM_AXES]
    axes = [a for a in axes if a is not None]
    if len(complete) < 2 or not axes:
        return _skip("needs at least 2 complete trials with different parameters")
    pfig = optuna.visualization.plot_parallel_coordinate(
        study, params=[a.name for a in axes], target_name="val accuracy"
    )
    pfig.update_layout(height=460)
    values = np.array([t.value for t in complete])
    columns = [np.asarray(a.values) for a in axes] + [values]
    order = np.argsort(values)  # best drawn last, on top
    scaled = np.stack([_unit(c) for c in columns], axis=1)[order]
    colors = plt.cm.viridis(_unit(values))[order]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for row, color in zip(scaled, colors, strict=True):
        ax.plot(range(len(columns)), row, color=color, alpha=0.8, linewidth=1.2)
    ticks = [(a.ticks, a.labels) for a in axes]
    ticks.append(([values.min(), values.max()], [_tick(values.min()), _tick(values.max())]))
    for x, column, (tickvals, ticktext) in zip(range(len(columns)), columns, ticks, strict=True):
        ax.axvline(x, color="grey", linewidth=0.6)
        span = (column.max() - column.min()) or 1.0
        for value, text in zip(tickvals, ticktext, strict=True):
            y = (value - column.min()) / span if column.max() > column.min() else 0.5
            ax.annotate(text, (x + 0.03, y), fontsize=7, va="center")
    ax.set_xticks(range(len(columns)), [a.label for a in axes] + ["val accuracy"], rotation=20)
    ax.set_yticks([])
    norm = plt.Normalize(values.min(), values.max())
    fig.colorbar(plt.cm.ScalarMappable(cmap="viridis", norm=norm), ax=ax, label="val accuracy")
    return Figure("", "", pfig, fig)


@dataclass(frozen=True)
class _Axis:
    """One parameter's axis of the matplotlib parallel coordinates."""

    name: str
    label: str
    values: list[float]
    ticks: list[float]
    labels: list[str]


def _param_axis(trials: list[FrozenTrial], name: str, log: bool) -> _Axis | None:
    """A parameter as Optuna sampled it, or None if it is the same in every trial.

    Rates are drawn on a log10 scale (linear where a value is 0: a weight decay's choices may
    include it); "n/a" (not sampled: nothing frozen, so no unfreeze
    epoch; nothing training, so no backbone rate) sits just below the smallest value;
    choices that are not all numbers become evenly spaced categories.
    """
    raw = [t.params.get(name) for t in trials]
    if len({repr(v) for v in raw}) < 2:
        return None
    present = [v for v in raw if v is not None]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        low, high = min(present), max(present)
        log = log and low > 0
        scale = math.log10 if log else float
        ticks, labels = [scale(low), scale(high)], [_tick(low), _tick(high)]
        missing = ticks[0] - 0.25 * ((ticks[1] - ticks[0]) or 1.0)
        if None in raw:
            ticks, labels = [missing, *ticks], ["n/a", *labels]
        column = [missing if v is None else scale(v) for v in raw]
        return _Axis(name, f"{name} (log)" if log else name, column, ticks, labels)
    categories = sorted({str(v) for v in present})
    if None in raw:
        categories.insert(0, "n/a")
    column = [float(categories.index("n/a" if v is None else str(v))) for v in raw]
    return _Axis(name, name, column, [float(i) for i in range(len(categories))], categories)


def _unit(column: np.ndarray) -> np.ndarray:
    span = column.max() - column.min()
    return (column - column.min()) / span if span else np.full_like(column, 0.5, dtype=float)


def _tick(value: float) -> str:
    return f"{value:.2g}" if abs(value) < 0.01 else f"{value:.3g}"


def _heatmap(complete: list[FrozenTrial], epochs: int) -> Figure:
    if not complete:
        return _skip("no complete trial yet")
    starts: list[int | None] = [None, *range(epochs)]
    best = np.full((_STAGE_COUNT + 1, len(starts)), np.nan)
    count = np.zeros(best.shape, dtype=int)
    for trial in complete:
        params = attrs.recipe_params(trial)
        row = params.get("freeze_depth", 0)
        start = None if row == 0 else params.get("unfreeze_epoch")
        if start not in starts or not 0 <= row <= _STAGE_COUNT:
            continue
        col = starts.index(start)
        best[row, col] = np.nanmax([best[row, col], trial.value])
        count[row, col] += 1
    columns = ["never" if s is None else f"epoch {s}" for s in starts]
    rows = [f"{d}{' (none)' if d == 0 else ' (all)' if d == _STAGE_COUNT else ''}"
            for d in range(_STAGE_COUNT + 1)]  # fmt: skip
    text = [
        ["" if n == 0 else f"{v:.3f} (n={n})" for v, n in zip(values, counts, strict=True)]
        for values, counts in zip(best, count, strict=True)
    ]
    x_label = "unfreeze epoch (nothing frozen: counted as never)"
    y_label = "stages frozen at the start"
    pfig = go.Figure(
        go.Heatmap(
            z=best,
            x=columns,
            y=rows,
            text=text,
            texttemplate="%{text}",
            colorscale="Viridis",
            colorbar={"title": "best val acc"},
            hoverongaps=False,
        )
    )
    _plotly_axes(pfig, x_label, y_label)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    image = ax.imshow(np.ma.masked_invalid(best), cmap="viridis", aspect="auto", origin="lower")
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(len(rows)), rows)
    shade = image.norm
    for (r, c), label in np.ndenumerate(np.array(text, dtype=object)):
        if label:  # dark text on viridis' bright (high) end, white on its dark end
            color = "black" if shade(best[r, c]) > 0.6 else "white"
            ax.text(c, r, label, ha="center", va="center", color=color, fontsize=8)
    fig.colorbar(image, ax=ax, label="best val accuracy")
    _mpl_axes(ax, x_label, y_label, legend=False)
    ax.set_facecolor("#f2f2f2")  # combinations no complete trial tried
    ax.grid(False)
    return Figure("", "", pfig, fig)


def _epoch_time(trials: list[FrozenTrial]) -> Figure:
    by_depth: dict[int, list[float]] = {}
    for trial in trials:
        seconds = trial.user_attrs.get(attrs.EPOCH_SECONDS) or []
        depths = trial.user_attrs.get(attrs.FROZEN_DEPTH) or []
        for depth, secs in zip(depths, seconds, strict=False):
            by_depth.setdefault(int(depth), []).append(float(secs))
    if not by_depth:
        return _skip("no epoch timed yet")
    depths = sorted(by_depth)
    names = [f"{d} frozen (n={len(by_depth[d])})" for d in depths]
    pfig = go.Figure()
    for depth, name in zip(depths, names, strict=True):
        pfig.add_box(y=by_depth[depth], name=name, marker_color=_COMPLETE)
    pfig.update_layout(showlegend=False)
    x_label = "stages frozen during the epoch (n: epochs timed)"
    _plotly_axes(pfig, x_label, "seconds per epoch")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.boxplot([by_depth[d] for d in depths], tick_labels=names)
    ax.tick_params(axis="x", labelsize=8)
    _mpl_axes(ax, x_label, "seconds per epoch", legend=False)
    return Figure("", "", pfig, fig)


def _plotly_axes(fig: go.Figure, x: str, y: str) -> None:
    fig.update_layout(
        xaxis_title=x, yaxis_title=y, template="plotly_white", margin={"t": 30}, height=420
    )


def _mpl_axes(ax: Any, x: str, y: str, legend: bool = True) -> None:
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(loc="lower right", fontsize=8)
