"""`tuner report`: one self-contained HTML page, PNGs and CSVs that show what a search found.

The results table has the shape of the reference notebooks' summaries (setup, freeze/unfreeze,
learning rates, final and best val accuracy, time per epoch), with the classic recipes' rows
marked (and the warm starts', earlier studies' winners), so a reader sees at a glance by how
much the search beat the textbook recipes and what won before, and whether by more than noise:
each row's gap to the best is also given in images with the exact McNemar p-value of the two
trials' predictions on the same validation images, and the best accuracy with its 95% interval.
A trial that `tuner export-best` tested shows its held-out test accuracy.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from tuner.config import StudyConfig, dimension_values
from tuner.errors import TunerError
from tuner.recipe import RECIPES, Recipe, describe_freezing, describe_schedule
from tuner.results import tables as reporting
from tuner.results.figures import Figure, study_figures
from tuner.search import attrs
from tuner.search import study as study_mod
from tuner.search.warm_start import Source
from tuner.stats import Accuracy, PairedComparison

TOP_SEARCH_ROWS = 5  # search trials in the results table, besides classic recipes, warm starts
_RECIPES = {recipe.name: recipe for recipe in RECIPES}


@dataclass(frozen=True)
class ReportFiles:
    """What `tuner report` wrote, and the results table it printed."""

    folder: Path
    html: Path
    pngs: tuple[Path, ...]
    trials_csv: Path
    results_csv: Path
    results: pd.DataFrame
    verdict: str  # how the best trial compares with the classic recipes, in one sentence
    skipped: tuple[str, ...]  # "figure: why", for figures the study cannot support yet


def write_report(pinned: study_mod.PinnedStudy, out: Path) -> ReportFiles:
    """Write report.html, one PNG per figure, trials.csv and results.csv into ``out``."""
    if out.exists() and not out.is_dir():
        raise TunerError(f"--out {out}: is a file; give a folder (it is created if missing).")
    out.mkdir(parents=True, exist_ok=True)
    study, epochs = pinned.study, pinned.config.train.epochs
    figures = study_figures(study, epochs)
    results = results_table(study, pinned.config)
    trials_csv, results_csv = out / "trials.csv", out / "results.csv"
    reporting.trials_table(study).to_csv(trials_csv, index=False)
    results.to_csv(results_csv, index=False)
    page = out / "report.html"
    verdict = recipe_verdict(study)
    page.write_text(_page(pinned, results, verdict, figures), encoding="utf-8")
    pngs = tuple(path for f in figures if (path := f.save_png(out)) is not None)
    skipped = tuple(f"{f.name}: {f.skipped}" for f in figures if f.skipped)
    return ReportFiles(out, page, pngs, trials_csv, results_csv, results, verdict, skipped)


def results_table(study: optuna.Study, config: StudyConfig) -> pd.DataFrame:
    """The classic recipes' trials, the warm starts', then the best search trials, one row each."""
    ranked = study_mod.ranked_trials(study)
    best = ranked[0] if ranked else None
    chosen = [trial for _, trial in reporting.known_recipe_trials(study)]
    searched = [t for t in ranked if not {attrs.RECIPE, attrs.WARM_START} & t.user_attrs.keys()]
    chosen += searched[:TOP_SEARCH_ROWS]
    return pd.DataFrame([_row(study, t, best, config) for t in chosen])


def _row(
    study: optuna.Study, trial: FrozenTrial, best: FrozenTrial | None, config: StudyConfig
) -> dict[str, object]:
    epochs = config.train.epochs
    params = attrs.trial_params(trial, config.space)
    curve = trial.user_attrs.get(attrs.VAL_ACCURACY) or []
    seconds = trial.user_attrs.get(attrs.EPOCH_SECONDS) or []
    complete = trial.state == TrialState.COMPLETE
    gap = 100 * (trial.value - best.value) if complete and best is not None else None
    versus = reporting.paired(trial, best) if complete and best is not None else None
    correct = attrs.val_correct(trial) if complete else None
    tested = study.user_attrs.get(f"{attrs.TEST_EVALUATION_PREFIX}{trial.number}")
    return {
        "setup": _setup(trial),
        "trial": trial.number,
        "best": "★" if best is not None and trial.number == best.number else "",
        "freeze / unfreeze": describe_freezing(params, epochs) if params else "",
        "head lr": params.head_lr if params else None,
        "backbone lr": params.backbone_lr if params else None,
        "optimizer": params.optimizer if params else "",
        "batch": params.batch_size if params else None,
        "final val acc": curve[-1] if curve else None,
        "best val acc": trial.value if complete else (max(curve) if curve else None),
        "95% CI": None if correct is None else _interval(Accuracy.of(correct)),
        "vs best (points)": None if gap is None else round(gap, 1),
        "vs best (images)": None if versus is None else f"{versus.images:+d} of {versus.n}",
        "p (McNemar)": None
        if versus is None or trial.number == best.number
        else round(versus.p_value, 4),
        "test acc": tested["test"]["accuracy"] if tested else None,
        "epochs": len(curve),
        "sec/epoch": round(sum(seconds) / len(seconds), 2) if seconds else None,
        "state": trial.state.name.lower(),
    }


def _setup(trial: FrozenTrial) -> str:
    """What the results table's setup column says: "classic: fine-tune from the start",
    "warm start: pets #12" or "search"."""
    recipe, source = trial.user_attrs.get(attrs.RECIPE), Source.of(trial)
    if recipe in _RECIPES:
        return f"classic: {_RECIPES[recipe].title}"
    return source.title if source else "search"


def recipe_verdict(study: optuna.Study) -> str:
    """By how much the best trial beats each classic recipe and warm start, in one sentence:
    accuracy points, images, and whether beyond noise (exact McNemar on the validation images)."""
    margins = [m for m in reporting.recipe_margins(study) if m.points is not None]
    if not margins:
        return "No classic recipe completed in this study (search.baselines: false, or pending)."
    best = study_mod.ranked_trials(study)[0]
    own = next((m for m in margins if m.trial.number == best.number), None)
    if own is not None:
        title = own.recipe.title
        what = f"a classic recipe, {title}" if isinstance(own.recipe, Recipe) else title
        return f"The best trial is {what} (#{best.number}): not beaten yet."
    gaps = [
        f"{m.recipe.title} (#{m.trial.number}) by {m.points:.1f} ({m.evidence()})" for m in margins
    ]
    listed = gaps[0] if len(gaps) == 1 else f"{', '.join(gaps[:-1])} and {gaps[-1]}"
    return f"The best search trial, #{best.number}, beats {listed} accuracy points."


def format_results(results: pd.DataFrame) -> str:
    """The results table as text for the terminal."""
    if results.empty:
        return "no finished trial yet: nothing to compare."
    shown = results.astype(object)
    for column in shown.columns:
        shown[column] = [_cell(column, value) for value in shown[column]]
    return shown.to_string(index=False)


def describe(files: ReportFiles) -> str:
    """What the CLI prints: the table, where each file went, what could not be drawn."""
    lines = [format_results(files.results), "", files.verdict, ""]
    lines.append(f"report written to {files.folder}/:")
    lines.append(f"  {files.html.name}  (open in a browser; self-contained, works offline)")
    lines.append(f"  {', '.join(p.name for p in files.pngs)}")
    lines.append(f"  {files.trials_csv.name} (every trial), {files.results_csv.name} (the table)")
    lines += [f"  not drawn: {why}" for why in files.skipped]
    return "\n".join(lines)


# --- the HTML page ---------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; padding: 0 1rem; max-width: 1640px;
  color: #222; }
h1 { margin-bottom: .2rem; } .meta { color: #555; margin-top: 0; }
.wide { overflow-x: auto; margin: 1rem 0; }
table { border-collapse: collapse; font-size: .85rem; }
th, td { border-bottom: 1px solid #ddd; padding: .3rem .5rem; text-align: left; }
td { white-space: nowrap; } td.words { white-space: normal; min-width: 8rem; }
th { background: #f4f4f4; } tr.recipe { background: #eef7ee; } tr.warm { background: #eaf1fb; }
tr.best { background: #fff3c4; }
tr.best td { font-weight: 600; } code { background: #f4f4f4; padding: .1rem .3rem; }
.verdict { font-size: 1.1rem; font-weight: 600; background: #eef7ee; padding: .6rem .8rem;
  border-left: 4px solid #2ca02c; }
.skipped { color: #777; font-style: italic; } section { margin-top: 2rem; }
"""


def _page(
    pinned: study_mod.PinnedStudy, results: pd.DataFrame, verdict: str, figures: list[Figure]
) -> str:
    study, config = pinned.study, pinned.config
    counts = reporting.state_counts(study)
    ranked = study_mod.ranked_trials(study)
    parts = [
        f"<h1>Study {_e(study.study_name)}</h1>",
        f"<p class='meta'>data: {_e(config.data.source)} at {config.data.image_size} px, "
        f"{_e(_archs(config))} from {_e(pinned.weights.describe())}, "
        f"{config.train.epochs} epochs per trial; trials: "
        + ", ".join(f"{n} {state}" for state, n in counts.items() if n)
        + "</p>",
        _best_paragraph(study, ranked, config),
        "<h2>Results</h2>",
        f"<p class='verdict'>{_e(verdict)}</p>",
        "<p>Classic recipes (green) are the reference notebooks' textbook setups, run as the "
        "first trials; warm starts (blue) are the best recipes of earlier studies, run next "
        "(<code>--warm-start</code>); the best trial is highlighted. <em>vs best</em> is in "
        "accuracy points.</p>",
        _results_html(results),
    ]
    first = True
    for figure in figures:
        parts.append(f"<section><h2>{_e(figure.title)}</h2>")
        if figure.plotly is None:
            parts.append(f"<p class='skipped'>Not drawn: {_e(figure.skipped or '')}.</p>")
        else:  # plotly.js is inlined once, with the first figure: the page needs no network
            parts.append(figure.plotly.to_html(full_html=False, include_plotlyjs=first))
            first = False
        parts.append("</section>")
    body = "\n".join(parts)
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>tuner report: {_e(study.study_name)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )


def _archs(config: StudyConfig) -> str:
    return " or ".join(map(str, dimension_values(config.space.arch)))


def _best_paragraph(study: optuna.Study, ranked: list[FrozenTrial], config: StudyConfig) -> str:
    if not ranked:
        return "<p>No trial has completed yet.</p>"
    best = ranked[0]
    schedule = describe_schedule(attrs.trial_params(best, config.space), config.train.epochs)
    return (
        f"<p><strong>Best: trial #{best.number}, val accuracy "
        f"{_e(reporting.describe_value(best))}</strong> (epoch "
        f"{best.user_attrs.get('best_epoch')}): {_e(schedule)}.<br>{_test_sentence(study, best)}"
        f"{_soup_sentence(study)}"
        f"<br>Export it: <code>tuner export-best --study {_e(study.study_name)} --out best/</code>"
        "</p>"
    )


def _test_sentence(study: optuna.Study, best: FrozenTrial) -> str:
    """The best trial's held-out test accuracy, if `tuner export-best` has measured it."""
    tested = study.user_attrs.get(f"{attrs.TEST_EVALUATION_PREFIX}{best.number}")
    if tested is None:
        return (
            "Its val accuracy is the one the search selected on, so it is optimistic; "
            "<code>tuner export-best</code> measures it once on the held-out test split."
        )
    test = tested["test"]
    accuracy = Accuracy.from_dict(test)
    text = f"Held-out test accuracy, measured once by tuner export-best: {accuracy.describe()}"
    if tested["refit"] is not None:
        text += f" for the refit on training + validation images ({tested['refit']['epochs']} "
        text += f"epochs); the search's own checkpoint: {test['search_checkpoint']['accuracy']:.4f}"
    return _e(text + ".")


def _soup_sentence(study: optuna.Study) -> str:
    """What the last `tuner export-best --soup` averaged, and its test beside the best single's."""
    soup = study.user_attrs.get(attrs.SOUP)
    if soup is None:
        return ""
    kept = ", ".join(f"#{item['trial']}" for item in soup["ingredients"])
    text = (
        f"Greedy soup (export-best --soup {soup['asked']}) of trials {kept} "
        f"({len(soup['rejected'])} rejected): val {soup['val']['soup']:.4f}"
    )
    test = soup.get("test")
    if test is not None:
        versus = PairedComparison.from_dict(test["soup_vs_best_single"])
        text += (
            f"; held-out test {Accuracy.from_dict(test['soup']).describe()} against the best "
            f"single trial #{soup['val']['best_single_trial']}'s "
            f"{Accuracy.from_dict(test['best_single']).describe()}: {versus.points:+.1f} points "
            f"({versus.evidence()}, exact McNemar)"
        )
    return "<br>" + _e(text + ".")


def _interval(accuracy: Accuracy) -> str:
    low, high = accuracy.interval
    return f"{low:.4f}-{high:.4f}"


_WORDS = {"setup": " class='words'", "freeze / unfreeze": " class='words'"}
"""Columns of words, which may wrap; numbers stay on one line."""


def _results_html(results: pd.DataFrame) -> str:
    if results.empty:
        return "<p class='skipped'>No finished trial yet.</p>"
    header = "".join(f"<th>{_e(c)}</th>" for c in results.columns)
    rows = []
    for record in results.to_dict("records"):
        classes = []
        if str(record["setup"]).startswith("classic"):
            classes.append("recipe")
        if str(record["setup"]).startswith("warm start"):
            classes.append("warm")
        if record["best"]:
            classes.append("best")
        cells = "".join(f"<td{_WORDS.get(k, '')}>{_e(_cell(k, v))}</td>" for k, v in record.items())
        rows.append(f"<tr class='{' '.join(classes)}'>{cells}</tr>")
    table = f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    return f"<div class='wide'>{table}</div>"  # scrolls sideways on a narrow window


def _cell(column: str, value: object) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if column in ("head lr", "backbone lr"):
        return f"{value:.2g}"
    if column in ("final val acc", "best val acc", "test acc"):
        return f"{value:.4f}"
    if column == "p (McNemar)":
        return "<0.001" if value < 0.001 else f"{value:.3f}" if value < 0.01 else f"{value:.2f}"
    if column == "vs best (points)":
        return f"{value:+.1f}"
    return str(value)


def _e(text: str) -> str:
    return html.escape(str(text))
