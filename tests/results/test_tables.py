"""The trials table keeps integers integers when some trials lack a value (pandas would not)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState, create_trial

from tuner.results.tables import study_details, trials_table
from tuner.search import attrs

RECIPE = {
    "freeze_depth": 2,
    "unfreeze_epoch": 1,
    "unfreeze_mode": "all",
    "head_lr": 1e-3,
    "backbone_lr": 1e-4,
    "optimizer": "adamw",
    "batch_size": 32,
    "weight_decay": 1e-4,
}


def _study(tmp_path: Path) -> optuna.Study:
    """A complete trial, a pruned one that never unfreezes and a failed one with no params."""
    study = optuna.create_study(
        study_name="gaps", storage=f"sqlite:///{tmp_path / 't.db'}", direction="maximize"
    )
    study.add_trial(
        create_trial(
            state=TrialState.COMPLETE,
            value=0.9,
            user_attrs={
                attrs.PARAMS: RECIPE,
                attrs.BEST_EPOCH: 1,
                attrs.EPOCH_SECONDS: [1.0, 1.2],
            },
        )
    )
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={attrs.FAIL_REASON: "boom"}))
    never = {**RECIPE, "unfreeze_epoch": None, "batch_size": 64, "freeze_depth": 5}
    study.add_trial(
        create_trial(
            state=TrialState.PRUNED,
            user_attrs={attrs.PARAMS: never, attrs.BEST_EPOCH: 0, attrs.EPOCH_SECONDS: [1.0]},
        )
    )
    return study


def test_status_shows_integers_despite_a_trial_without_params(tmp_path: Path) -> None:
    study = _study(tmp_path)
    text = study_details(study, trials_table(study))
    assert "32.0" not in text and "64.0" not in text and "5.0" not in text
    rows = {line.split()[0]: line.split() for line in text.splitlines()[-3:]}
    assert rows["0"][:9] == ["0", "complete", "0.9000", "1", "2", "2", "1", "all", "0.001"]
    assert "32" in rows["0"] and "64" in rows["2"]
    assert rows["2"][:6] == ["2", "pruned", "0", "1", "5", "never"]  # no val_acc
    assert rows["1"][:4] == ["1", "fail", "0", "never"]  # no best epoch, no params


def test_the_csv_writes_integers_and_blanks(tmp_path: Path) -> None:
    study = _study(tmp_path)
    table = trials_table(study)
    assert str(table["batch_size"].dtype) == "Int64"
    csv = tmp_path / "trials.csv"
    table.to_csv(csv, index=False)
    assert "32.0" not in csv.read_text()
    read = pd.read_csv(csv)
    assert read["batch_size"].isna().tolist() == [False, True, False]
    assert read["best_epoch"].tolist()[::2] == [1, 0]
