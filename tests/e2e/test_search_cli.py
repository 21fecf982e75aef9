"""`tuner search`, `status` and `export-best` through the real command line."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest

from tests.e2e.tuner_cli import run_tuner
from tuner.search.attrs import CHECKPOINT as CHECKPOINT_ATTR

pytestmark = pytest.mark.slow


def load_tiny(folder: Path) -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder / 'tuner.db'}")


def test_search_prints_config_progress_and_summary(searched: Path) -> None:
    out, err = (searched / "search.out").read_text(), (searched / "search.err").read_text()
    assert "config:    tiny.yaml: the built-in default with " in out and "image_size=16" in out
    assert "study:     'tiny' (new) in sqlite:///tuner.db" in out
    assert "enqueued 3 classic recipes" in out
    # stderr is no terminal here: plain progress lines, no tqdm redraws
    assert "\r" not in err
    assert re.search(
        r"^search tiny: 0/5 trials \(running 0, complete 0, pruned 0, failed 0\)", err, re.M
    )
    assert re.search(
        r"^search tiny: 5/5 trials \(running 0, complete \d, pruned \d, failed \d\), "
        r"[\d.]+ trials/(s|min), took [\dhms]+, best 0\.\d{4} \(#\d\)$",
        err,
        re.M,
    ), err
    assert "study tiny: 5 of 5 trials finished" in out
    assert "classic recipes vs the best trial (#" in out and "of 40 images; " in out
    assert "next: tuner export-best --study tiny" in out


def test_budget_counts_finished_trials_and_recipes_run_first(searched: Path) -> None:
    study = load_tiny(searched)
    states = [t.state for t in study.trials]
    finished = [
        s for s in states if s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    assert len(finished) == 5
    recipes = [t.user_attrs.get("recipe") for t in study.trials[:3]]
    assert recipes == ["feature_extraction", "early_unfreeze", "fine_tune"]
    fe = study.trials[0].user_attrs["params"]
    assert (fe["freeze_depth"], fe["unfreeze_epoch"], fe["optimizer"]) == (5, None, "adam")


def test_trials_record_curves_and_only_top_k_checkpoints_survive(searched: Path) -> None:
    study = load_tiny(searched)
    for trial in study.trials:
        curves = trial.user_attrs
        assert (
            len(curves["val_accuracy"]) == len(curves["train_loss"]) == len(curves["epoch_seconds"])
        )
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert len(curves["val_accuracy"]) == 2
            assert trial.value == max(curves["val_accuracy"])
            assert curves["best_epoch"] == curves["val_accuracy"].index(trial.value)
    store = searched / "tuner-artifacts"
    checkpoints = [
        t.user_attrs[CHECKPOINT_ATTR] for t in study.trials if CHECKPOINT_ATTR in t.user_attrs
    ]
    surviving = [a for a in checkpoints if (store / a).is_file()]
    assert 1 <= len(surviving) <= 2  # search.keep_checkpoints: 2
    # every trial that ever held a checkpoint keeps its two figures for the dashboard
    stored = [p for p in store.iterdir() if p.is_file()]
    assert len(stored) == len(surviving) + 2 * len(checkpoints)


def test_status_lists_studies_counts_best_and_writes_csv(searched: Path) -> None:
    result = run_tuner(searched, "status", "--csv", "trials.csv")
    assert result.returncode == 0, result.stderr
    assert "tiny" in result.stdout and "best: trial #" in result.stdout
    import pandas as pd

    table = pd.read_csv(searched / "trials.csv")
    assert len(table) == 5
    assert {"trial", "state", "val_acc", "freeze_depth", "head_lr", "recipe"} <= set(table.columns)


def test_export_best_round_trip_in_a_new_process(searched: Path) -> None:
    result = run_tuner(searched, "export-best", "--out", "best")
    assert result.returncode == 0, result.stderr
    config = json.loads((searched / "best" / "config.json").read_text())
    metrics = json.loads((searched / "best" / "metrics.json").read_text())
    study = load_tiny(searched)
    ranked = sorted(
        (t for t in study.trials if t.value is not None and t.state.name == "COMPLETE"),
        key=lambda t: (-t.value, t.number),
    )
    assert config["trial_number"] == ranked[0].number
    assert config["val_accuracy"] == pytest.approx(ranked[0].value, abs=1e-9)
    test = config["test"]  # measured once, on the held-out split, and printed
    assert f"test accuracy: {test['accuracy']:.4f} ({test['correct']} of {test['images']}" in (
        result.stdout
    )
    assert len(metrics["confusion_matrix"]["rows_true_cols_predicted"]) == 10
    assert set(config["versions"]) >= {"torch", "torchvision", "optuna", "tuner"}
    # A fresh interpreter reloads the export and reproduces the recorded accuracy on the split.
    script = textwrap.dedent(
        """
        import json, sys, torch
        import tuner
        from tuner.config import from_dict
        from tuner.data.prepare import prepare_data
        model, preprocess = tuner.load_model("best")[:2]
        cfg = json.load(open("best/config.json"))
        data = prepare_data(from_dict(cfg["study_config"]).data, with_test=True)
        with torch.no_grad():
            for images, labels in ((data.val_images, data.val_labels),
                                   (data.test_images, data.test_labels)):
                logits = model(preprocess(list(images)))
                print((logits.argmax(1) == labels).float().mean().item())
        """
    )
    reloaded = subprocess.run(
        [sys.executable, "-c", script], cwd=searched, capture_output=True, text=True, timeout=300
    )
    assert reloaded.returncode == 0, reloaded.stderr
    val, test_accuracy = map(float, reloaded.stdout.split())
    assert val == pytest.approx(ranked[0].value, abs=1e-9)
    assert test_accuracy == pytest.approx(test["accuracy"], abs=1e-6)  # float32 mean


def test_export_refuses_to_overwrite_without_force(searched: Path) -> None:
    first = run_tuner(searched, "export-best", "--out", "again")
    assert first.returncode == 0, first.stderr
    second = run_tuner(searched, "export-best", "--out", "again")
    assert second.returncode == 2 and "--force" in second.stderr
    assert "Traceback" not in second.stderr
    forced = run_tuner(searched, "export-best", "--out", "again", "--force")
    assert forced.returncode == 0, forced.stderr
    assert sorted(p.name for p in (searched / "again").iterdir()) == [
        "MODEL_CARD.md",
        "config.json",
        "metrics.json",
        "model.safetensors",
    ]


def test_rerun_continues_and_a_changed_config_is_refused(searched: Path) -> None:
    before = len(load_tiny(searched).trials)
    changed = run_tuner(searched, "search", "tiny.yaml", "--set", "train.epochs=3")
    assert changed.returncode == 2
    assert "train.epochs: study has 2, this run has 3" in changed.stderr
    assert "Traceback" not in changed.stderr
    assert len(load_tiny(searched).trials) == before  # nothing stored was touched
    more = run_tuner(searched, "search", "tiny.yaml", "--trials", "6")
    assert more.returncode == 0, more.stderr
    assert "study:     'tiny' (5 finished trials: continuing it)" in more.stdout
    study = load_tiny(searched)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 6
    assert sum("recipe" in t.user_attrs for t in study.trials) == 3  # not enqueued again
    # Naming only the study continues it with its stored config, to a larger budget.
    by_name = run_tuner(searched, "search", "--study", "tiny", "--trials", "7")
    assert by_name.returncode == 0, by_name.stderr
    assert "config:    stored in the study: the built-in default with " in by_name.stdout
    assert "train.epochs=2" in by_name.stdout
    finished = [t for t in load_tiny(searched).trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 7


def offline_env(tmp_path: Path) -> dict[str, str]:
    """An empty torch hub cache and a proxy that refuses: ImageNet weights cannot be had."""
    env = {"TORCH_HOME": str(tmp_path / "torch-home")}
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        env[var] = "http://127.0.0.1:9"
    env["NO_PROXY"] = env["no_proxy"] = ""
    return env


def test_weights_from_a_file_are_pinned_and_a_changed_file_is_refused(
    tmp_path: Path, tiny_study_file: Path
) -> None:
    import torch
    import torchvision

    weights = tmp_path / "my-resnet18.pt"
    torch.save(torchvision.models.resnet18(num_classes=7).state_dict(), weights)
    args = (
        "search",
        str(tiny_study_file),
        "--set",
        f"model.weights={weights}",
        "--set",
        "search.baselines=false",
        "--trials",
        "1",
    )
    first = run_tuner(tmp_path, *args)
    assert first.returncode == 0, first.stderr
    assert f"weights file {weights}" in first.stdout
    stored = load_tiny(tmp_path).user_attrs["tuner:weights"]["resnet18"]  # per arch
    assert stored["kind"] == "file" and len(stored["sha256"]) == 64
    torch.save(torchvision.models.resnet18(num_classes=7).state_dict(), weights)  # new values
    again = run_tuner(tmp_path, *args[:-1], "2")
    assert again.returncode == 2
    assert str(weights) in again.stderr and "Traceback" not in again.stderr
    assert len(load_tiny(tmp_path).trials) == 1


def test_auto_weights_offline_fall_back_loudly(tmp_path: Path, tiny_study_file: Path) -> None:
    result = run_tuner(
        tmp_path,
        "search",
        str(tiny_study_file),
        "--set",
        "model.weights=auto",
        "--set",
        "search.baselines=false",
        "--trials",
        "1",
        env=offline_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("WARNING: ImageNet weights for resnet18 could not be loaded") == 2
    assert load_tiny(tmp_path).user_attrs["tuner:weights"]["resnet18"]["kind"] == "none"


def test_imagenet_weights_offline_is_a_clear_error(tmp_path: Path, tiny_study_file: Path) -> None:
    result = run_tuner(
        tmp_path,
        "search",
        str(tiny_study_file),
        "--set",
        "model.weights=imagenet",
        env=offline_env(tmp_path),
    )
    assert result.returncode == 2
    assert "resnet18-f37072fd.pth" in result.stderr and "Traceback" not in result.stderr


def finished_trials(database: Path) -> int:
    """Read the count with plain sqlite3: polling must not create the schema the CLI creates."""
    import sqlite3

    if not database.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        try:
            query = "SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')"
            return conn.execute(query).fetchone()[0]
        except sqlite3.OperationalError:  # tables not created yet
            return 0


def test_ctrl_c_keeps_finished_trials_and_a_rerun_finishes_the_rest(
    tmp_path: Path, tiny_study_file: Path
) -> None:
    import os
    import signal
    import time

    from tests.e2e.tuner_cli import tuner_command

    process = subprocess.Popen(
        tuner_command("search", str(tiny_study_file), "--trials", "8"),
        cwd=tmp_path,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.5)  # interrupt once the first trial has finished
        if finished_trials(tmp_path / "tuner.db") > 0:
            break
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err
    states = {t.state.name for t in load_tiny(tmp_path).trials}
    assert "RUNNING" not in states and "COMPLETE" in states
    again = run_tuner(tmp_path, "search", str(tiny_study_file), "--trials", "8")
    assert again.returncode == 0, again.stderr
    finished = [t for t in load_tiny(tmp_path).trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 8


def test_a_time_budget_stops_trials_in_time_for_the_confirm(tiny_study_file: Path) -> None:
    folder = tiny_study_file.parent
    # one-epoch trials, so that even on busy cores two fit in the confirm's fifth of the budget
    confirming = ("--set", "search.confirm_top=2", "--set", "search.confirm_seeds=1")
    result = run_tuner(folder, "search", "tiny.yaml", "--trials", "1000", "--minutes", "1.25",
                       "--set", "train.epochs=1", "--set", "space.unfreeze_epoch=never",
                       "--set", "space.warmup_epochs=0", *confirming)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "time budget: --minutes 1.25 reached" in result.stdout
    assert "confirming: the top 2 trials re-run on 1 fresh seeds each" in result.stdout
    study = load_tiny(folder)
    ends_at = study.user_attrs["tuner:deadline"]["ends_at"]
    trials = study.get_trials()
    assert 2 <= len(trials) < 1000
    assert all(t.state.is_finished() for t in trials)  # none left running
    assert max(t.datetime_start.timestamp() for t in trials) < ends_at
    confirm = optuna.load_study(study_name="tiny-confirm", storage=f"sqlite:///{folder}/tuner.db")
    assert len(confirm.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--minutes", "0"], "--minutes 0: give a time budget above 0"),
        (["--minutes", "5", "--queue"], "drop --workers/--gpus/--minutes"),
    ],
)
def test_bad_time_budgets_are_refused_in_one_line(
    tiny_study_file: Path, args: list[str], message: str
) -> None:
    result = run_tuner(tiny_study_file.parent, "search", "tiny.yaml", *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
