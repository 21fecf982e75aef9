"""Tables and summaries of studies and trials, as text (the CLI prints them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from tuner.recipe import RECIPES, Recipe, TrialParams
from tuner.search import attrs, deadline
from tuner.search import study as study_mod
from tuner.search.confirm import Confirmation
from tuner.search.queue import QueuedStudy
from tuner.search.warm_start import Source
from tuner.stats import Accuracy, PairedComparison

if TYPE_CHECKING:
    from tuner.run.driver import SearchSession
    from tuner.run.workers import WorkerOutcome

_PARAM_COLUMNS = tuple(f.name for f in dataclasses.fields(TrialParams))
_TRICK_COLUMNS = _PARAM_COLUMNS[_PARAM_COLUMNS.index("weight_decay") + 1 :]
"""The arch and the recipe dimensions beyond freezing and rates: most studies fix most of them,
so the printed table shows only those that vary between its trials (the CSV has them all)."""


def state_counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    return {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}


def studies_table(storage: optuna.storages.BaseStorage) -> str:
    """One row per study: trial counts by state and the best value."""
    rows = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=True):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        counts = state_counts(study)
        ranked = study_mod.ranked_trials(study)
        rows.append(
            {
                "study": summary.study_name,
                "complete": counts["complete"],
                "pruned": counts["pruned"],
                "failed": counts["fail"],
                "running": counts["running"],
                "waiting": counts["waiting"],
                "best val acc": round(ranked[0].value, 4) if ranked else None,
                "best trial": ranked[0].number if ranked else None,
            }
        )
    if not rows:
        return "no studies in this storage yet."
    return pd.DataFrame(rows).to_string(index=False)


def queue_table(entries: list[QueuedStudy]) -> str:
    """The queue as pools serve it: one row per queued study, the next one served first."""
    if not entries:
        return "no queued studies in this storage (queue one with `tuner search CONFIG --queue`)."
    rows = []
    for q in entries:
        refused = "; ".join(f"{host} cannot load it: {why}" for host, why in q.refused.items())
        rows.append({
            "study": q.name, "priority": q.priority, "state": q.state,
            "finished": f"{q.finished}/{q.budget}", "running": q.running,
            "workers": ", ".join(q.workers) or "-", "note": q.reason or refused or "",
        })  # fmt: skip
    return pd.DataFrame(rows).to_string(index=False)


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """Every trial with its full recipe, outcome and cost (the --csv table)."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        params = attrs.recipe_params(trial)
        seconds = trial.user_attrs.get(attrs.EPOCH_SECONDS) or []
        row = {"trial": trial.number, "state": trial.state.name.lower(), "val_acc": trial.value}
        row["best_epoch"] = trial.user_attrs.get(attrs.BEST_EPOCH)
        row["epochs"] = len(seconds)
        row.update({name: params.get(name) for name in _PARAM_COLUMNS})
        row["recipe"] = trial.user_attrs.get(attrs.RECIPE) or _warm_start_title(trial)
        row["sec_per_epoch"] = round(sum(seconds) / len(seconds), 2) if seconds else None
        row["checkpoint"] = _checkpoint_state(study, trial)
        row["note"] = trial.user_attrs.get(attrs.STOPPED) or trial.user_attrs.get(
            attrs.FAIL_REASON, ""
        )
        rows.append(row)
    return _keep_integers(pd.DataFrame(rows))


_INTEGER_COLUMNS = ("trial", "best_epoch", "epochs", "freeze_depth", "batch_size", "unfreeze_epoch")


def _keep_integers(table: pd.DataFrame) -> pd.DataFrame:
    """Integer columns as nullable Int64: pandas makes a column with a gap float (32.0).

    A column that holds anything but numbers (an old trial's ``"never"``) stays as it is.
    """
    for column in _INTEGER_COLUMNS:
        if column in table and pd.api.types.is_numeric_dtype(table[column]):
            table[column] = table[column].astype("Int64")
    return table


def _warm_start_title(trial: FrozenTrial) -> str:
    source = Source.of(trial)
    return source.title if source else ""


def _checkpoint_state(study: optuna.Study, trial: FrozenTrial) -> str:
    if attrs.CHECKPOINT not in trial.user_attrs:
        return ""
    return "removed" if study_mod.checkpoint_removed(study, trial) else "kept"


def study_details(study: optuna.Study, table: pd.DataFrame) -> str:
    """Counts by state, the best trial and its params, then the trials table."""
    counts = state_counts(study)
    lines = [
        f"study {study.study_name}: "
        + ", ".join(f"{n} {state}" for state, n in counts.items() if n),
    ]
    ranked = study_mod.ranked_trials(study)
    if ranked:
        best = ranked[0]
        lines.append(f"best: trial #{best.number}, val accuracy {describe_value(best)}")
        lines.append("  " + _describe_params(best))
    else:
        lines.append("best: no completed trial yet")
    if not table.empty:
        lines += ["", _format(table).to_string(index=False)]
    return "\n".join(lines)


def _describe_params(trial: FrozenTrial) -> str:
    params = attrs.recipe_params(trial)
    return ", ".join(f"{k}={_short(params.get(k))}" for k in _PARAM_COLUMNS if k in params)


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "never" if value is None else str(value)


def _format(table: pd.DataFrame) -> pd.DataFrame:
    fixed = [c for c in _TRICK_COLUMNS if c in table and table[c].dropna().nunique() <= 1]
    shown = table.drop(columns=fixed)
    for column in ("head_lr", "backbone_lr", "weight_decay", "layer_decay"):
        if column in shown:
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.2g}")
    shown["val_acc"] = shown["val_acc"].map(lambda v: "" if pd.isna(v) else f"{v:.4f}")
    shown["unfreeze_epoch"] = shown["unfreeze_epoch"].map(
        lambda v: "never" if pd.isna(v) else str(v)
    )
    return shown.astype(object).fillna("")  # Int64 columns take no "" as a value


def search_summary(
    session: SearchSession,
    outcome: WorkerOutcome,
    seconds: float,
    confirmation: Confirmation | None = None,
) -> str:
    """What the search found, how it compares with the classic recipes, what its confirm
    runs said (``search.confirm_top``), and what to do next."""
    study = session.pinned.study
    counts = state_counts(study)
    minutes, secs = divmod(int(seconds), 60)
    lines = [
        "",
        f"study {study.study_name}: {outcome.finished} of {outcome.budget} trials finished "
        f"({counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} failed) "
        f"in {minutes}m{secs:02d}s this run.",
    ]
    if outcome.stopped_reason:
        lines.append(f"STOPPED EARLY: {outcome.stopped_reason}")
    ends_at = deadline.load(study)
    if ends_at is not None and outcome.finished < outcome.budget:
        lines.append(
            f"time budget: --minutes {ends_at.minutes:g} reached (trials stopped starting in "
            "time for the confirm); the same command continues the search."
        )
    lines += _workers_line(study)
    ranked = study_mod.ranked_trials(study)
    if not ranked:
        lines.append("no trial completed yet.")
        return "\n".join(lines)
    best = ranked[0]
    lines += [
        f"best: trial #{best.number}, val accuracy {describe_value(best)} "
        f"(epoch {best.user_attrs.get('best_epoch')})",
        "  " + _describe_params(best),
        "",
        "top trials:",
        _format(trials_table(study))  # the columns the study varies, for its top five
        .set_index("trial")
        .loc[[t.number for t in ranked[:5]]]
        .reset_index()
        .to_string(index=False),
        "",
        recipe_comparison(study),
    ]
    if confirmation is not None:
        lines += ["", confirm_table(confirmation), *_confirm_next(confirmation)]
    if session.context.weights.fallback_warning:
        lines += ["", session.context.weights.fallback_warning]
    lines.append(f"\nnext: tuner export-best --study {study.study_name} --out best/")
    return "\n".join(lines)


def _confirm_next(confirmation: Confirmation) -> list[str]:
    """What `tuner export-best` will take, given how far the confirm runs got."""
    if confirmation.complete:
        return [f"export-best exports the confirmed winner, trial #{confirmation.winner.trial}."]
    return [
        f"{confirmation.missing} confirm run(s) did not complete: run the same command again to "
        "finish them; until then export-best exports the search's best trial."
    ]


def _workers_line(study: optuna.Study) -> list[str]:
    """Which workers ran the finished trials, when more than one did."""
    ran: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False, states=study_mod.FINISHED):
        owner = trial.user_attrs.get(attrs.WORKER, {})
        name = f"{owner.get('worker', '?')} ({owner.get('device', '?')})"
        ran[name] = ran.get(name, 0) + 1
    if len(ran) < 2:
        return []
    return ["workers: " + ", ".join(f"{name} {n}" for name, n in sorted(ran.items()))]


def describe_value(trial: FrozenTrial) -> str:
    """A complete trial's val accuracy with its 95% interval, where it recorded its images:
    "0.9861 (354 of 359; 95% CI 0.9679-0.9940)"."""
    correct = attrs.val_correct(trial)
    return f"{trial.value:.4f}" if correct is None else Accuracy.of(correct).describe()


def paired(a: FrozenTrial, b: FrozenTrial) -> PairedComparison | None:
    """Trial A against trial B on the same validation images (exact McNemar), or None where
    either recorded no per-image results (a study searched before they were recorded)."""
    found = attrs.val_correct(a), attrs.val_correct(b)
    if found[0] is None or found[1] is None or len(found[0]) != len(found[1]):
        return None
    return PairedComparison.of(*found)


@dataclass(frozen=True)
class RecipeMargin:
    """A known recipe's trial (a classic recipe's, or a warm start's) and how far the best
    trial is ahead of it."""

    recipe: Recipe | Source  # each has a title and a description
    trial: FrozenTrial
    points: float | None  # best minus the recipe's value; None when its trial did not complete
    comparison: PairedComparison | None = None  # the best trial against it, image by image

    def evidence(self) -> str:
        """ "2 of 359 images; not significant, p = 0.50", or why there is no test."""
        if self.comparison is None:
            return "no per-image results recorded: significance unknown"
        return self.comparison.evidence()


def known_recipe_trials(study: optuna.Study) -> list[tuple[Recipe | Source, FrozenTrial]]:
    """The trials of known recipes: the classic recipes in RECIPES order, then the warm starts
    in the order they were queued; of a retried one, its last trial."""
    trials = study.get_trials(deepcopy=False)
    by_recipe = {t.user_attrs[attrs.RECIPE]: t for t in trials if attrs.RECIPE in t.user_attrs}
    known: list[tuple[Recipe | Source, FrozenTrial]] = [
        (recipe, by_recipe[recipe.name]) for recipe in RECIPES if recipe.name in by_recipe
    ]
    warm = {source: t for t in trials if (source := Source.of(t)) is not None}
    return known + list(warm.items())


def recipe_margins(study: optuna.Study) -> list[RecipeMargin]:
    """The known recipes that ran in this study (:func:`known_recipe_trials`) and how far the
    best trial is ahead of each; empty before any trial completes."""
    ranked = study_mod.ranked_trials(study)
    if not ranked:
        return []
    margins = []
    for recipe, trial in known_recipe_trials(study):
        if trial.state != TrialState.COMPLETE:
            margins.append(RecipeMargin(recipe, trial, None))
            continue
        points = 100 * (ranked[0].value - trial.value)
        margins.append(RecipeMargin(recipe, trial, points, paired(ranked[0], trial)))
    return margins


def recipe_comparison(study: optuna.Study) -> str:
    """How the best trial compares with each classic recipe's and warm start's trial: accuracy
    points, and how many images that is and whether it is beyond noise (exact McNemar on val)."""
    margins = recipe_margins(study)
    if not margins:
        return "classic recipes: not run in this study (search.baselines: false)."
    best = study_mod.ranked_trials(study)[0]
    compared = " and ".join(
        kind
        for kind, known in (("classic recipes", Recipe), ("warm starts", Source))
        if any(isinstance(m.recipe, known) for m in margins)
    )
    lines = [f"{compared} vs the best trial (#{best.number}), on the validation images:"]
    width = max(len(m.recipe.description) for m in margins)
    for margin in margins:
        trial = margin.trial
        if margin.points is None:
            outcome = trial.state.name.lower()
        elif trial.number == best.number:
            outcome = f"{trial.value:.4f}   the best trial itself"
        else:
            outcome = (
                f"{trial.value:.4f}   best is {margin.points:+.1f} points ({margin.evidence()})"
            )
        lines.append(f"  #{trial.number:<4} {margin.recipe.description:<{width}}  {outcome}")
    return "\n".join(lines)


def confirm_table(confirmation: Confirmation) -> str:
    """`tuner confirm`'s table: one row per candidate, the winner marked, then the verdict."""
    if not confirmation.results:
        return "nothing confirmed yet."
    lines = [
        f"confirmation of study {confirmation.parent!r}: {confirmation.seeds} fresh seeds per "
        "candidate (val accuracy)",
        "",
        f"  {'trial':>6}  {'original':>8}  {'mean':>6}  {'std':>6}  {'min..max':>13}  seeds",
    ]
    winner = confirmation.winner
    for result in confirmation.results:
        mark = "★" if winner is not None and result.trial == winner.trial else " "
        if result.values:
            spread = (
                f"{result.mean:.4f}  {result.std:.4f}  "
                f"{min(result.values):.4f}..{max(result.values):.4f}"
            )
        else:
            spread = f"{'-':>6}  {'-':>6}  {'-':>13}"
        seeds = ", ".join(f"{v:.4f}" for v in result.values) or "none yet"
        lines.append(f"{mark} #{result.trial:<5} {result.original:.4f}    {spread}  {seeds}")
        lines.append(f"          {result.schedule}")
    lines += ["", confirmation.verdict()]
    return "\n".join(lines)
