"""The trials table keeps integers integers when some trials lack a value (pandas would not);
recipe comparisons carry their evidence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState, create_trial

from tuner.results.tables import recipe_comparison, study_details, trials_table
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


def test_the_csv_has_every_dimension_and_the_printout_those_the_study_varies(
    tmp_path: Path,
) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'd.db'}", direction="maximize")
    tricks = {"arch": "resnet18", "mixup": 0.0, "ema": 0.0, "bn_policy": "train"}
    for value, decay in ((0.9, 0.55), (0.8, 1.0)):
        recipe = {**RECIPE, **tricks, "layer_decay": decay}
        study.add_trial(
            create_trial(state=TrialState.COMPLETE, value=value, user_attrs={attrs.PARAMS: recipe})
        )
    table = trials_table(study)
    assert {"arch", "layer_decay", "warmup_epochs", "mixup", "ema", "bn_policy"} <= set(table)
    assert table["layer_decay"].tolist() == [0.55, 1.0]
    header, first, _ = study_details(study, table).splitlines()[-3:]
    assert "layer_decay" in header.split() and "0.55" in first.split()
    assert not {"arch", "mixup", "ema", "bn_policy", "warmup_epochs"} & set(header.split())
    assert "layer_decay=0.55" in study_details(study, table) and "arch=resnet18" in study_details(
        study, table
    )


def _recipe_study(tmp_path: Path) -> optuna.Study:
    """Three classic recipes and a search trial, each with its right/wrong per val image."""
    study = optuna.create_study(
        study_name="recipes", storage=f"sqlite:///{tmp_path / 'r.db'}", direction="maximize"
    )
    n = 359
    right = {  # how many of the 359 images each got right; the best (#3) holds 354
        "feature_extraction": 260,
        "early_unfreeze": 346,
        "fine_tune": 352,
        None: 354,
    }
    for recipe, count in right.items():
        correct = np.arange(n) < count  # nested: the better trial is right wherever another is
        user_attrs = {attrs.PARAMS: RECIPE, attrs.VAL_CORRECT: attrs.record_val_correct(correct)}
        if recipe:
            user_attrs[attrs.RECIPE] = recipe
        study.add_trial(
            create_trial(state=TrialState.COMPLETE, value=count / n, user_attrs=user_attrs)
        )
    return study


def test_recipe_lines_say_the_gap_in_images_and_whether_it_is_beyond_noise(
    tmp_path: Path,
) -> None:
    text = recipe_comparison(_recipe_study(tmp_path))
    lines = text.splitlines()
    assert lines[0] == "classic recipes vs the best trial (#3), on the validation images:"
    assert "best is +26.2 points (94 of 359 images; p < 0.001)" in lines[1]
    assert "best is +2.2 points (8 of 359 images; p = 0.008)" in lines[2]
    assert "best is +0.6 points (2 of 359 images; not significant, p = 0.50)" in lines[3]


def test_the_best_trial_shows_its_interval_and_old_trials_say_what_they_lack(
    tmp_path: Path,
) -> None:
    study = _recipe_study(tmp_path)
    details = study_details(study, trials_table(study))
    assert "best: trial #3, val accuracy 0.9861 (354 of 359; 95% CI 0.9678-0.9940)" in details
    old = _study(tmp_path)  # trials recorded before per-image results were kept
    old.add_trial(create_trial(state=TrialState.COMPLETE, value=0.8, user_attrs={
        attrs.PARAMS: RECIPE, attrs.RECIPE: "fine_tune"}))  # fmt: skip
    assert "no per-image results recorded: significance unknown" in recipe_comparison(old)
