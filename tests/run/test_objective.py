"""The objective and the worker loop, on real Optuna with a real SQLite file and real torch."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import optuna
import pytest
from optuna.storages import RetryFailedTrialCallback
from optuna.trial import TrialState

from tuner.config import Fixed
from tuner.run.identity import pid_namespace
from tuner.run.objective import make_objective
from tuner.run.workers import run_trial, run_worker
from tuner.search import study as study_mod
from tuner.search.attrs import val_correct
from tuner.search.optuna_internals import study_storage, trial_id
from tuner.search.storage import ArtifactStore


def files_in(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_a_trial_records_curves_and_its_best_epoch(make_context) -> None:
    pinned, context = make_context()
    pinned.study.optimize(make_objective(context), n_trials=1)
    trial = pinned.study.trials[0]
    attrs = trial.user_attrs
    assert trial.state == TrialState.COMPLETE
    assert (
        len(attrs["val_accuracy"]) == len(attrs["train_loss"]) == len(attrs["epoch_seconds"]) == 2
    )
    assert trial.value == max(attrs["val_accuracy"])
    assert attrs["best_epoch"] == attrs["val_accuracy"].index(trial.value)
    assert trial.intermediate_values == dict(enumerate(attrs["val_accuracy"]))
    assert set(attrs["params"]) >= {"freeze_depth", "head_lr", "batch_size"}
    assert attrs["checkpoint_artifact"]
    # which validation images the best epoch got right: what paired comparisons read
    correct = val_correct(trial)
    assert len(correct) == len(context.data.val_labels)
    assert correct.dtype == bool and correct.mean() == pytest.approx(trial.value)


def test_the_pruner_stops_a_trial_after_its_report(make_context) -> None:
    pinned, context = make_context("train.epochs=3")
    study = optuna.load_study(
        study_name=pinned.study.study_name,
        storage=pinned.study._storage,
        pruner=optuna.pruners.ThresholdPruner(lower=1.1),  # nothing reaches 110%: prune at once
    )
    study.optimize(make_objective(context), n_trials=2)
    for trial in study.trials:
        assert trial.state == TrialState.PRUNED
        assert len(trial.user_attrs["val_accuracy"]) == 1  # stopped after epoch 0, not 3 epochs
        assert trial.user_attrs["stopped"] == "pruned after epoch 0"
        assert "checkpoint_artifact" not in trial.user_attrs


def test_a_trial_that_trained_all_its_epochs_is_never_pruned(make_context) -> None:
    pinned, context = make_context()  # 2 epochs
    study = optuna.load_study(
        study_name=pinned.study.study_name,
        storage=pinned.study._storage,
        # would prune at the second (last) epoch's report, and only there
        pruner=optuna.pruners.ThresholdPruner(lower=1.1, n_warmup_steps=1),
    )
    study.optimize(make_objective(context), n_trials=2)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    for trial in study.trials:
        assert len(trial.user_attrs["val_accuracy"]) == 2 and "stopped" not in trial.user_attrs
        assert trial.value is not None and trial.user_attrs["checkpoint_artifact"]


def test_the_objective_is_named_for_the_dashboard(make_context) -> None:
    pinned, _ = make_context()
    assert pinned.study.metric_names == ["val_accuracy"]


@pytest.mark.filterwarnings("ignore:Fixed parameter:UserWarning")
def test_a_diverging_trial_is_pruned_with_its_reason_and_the_search_goes_on(make_context) -> None:
    pinned, context = make_context("search.trials=2")
    # sgd at lr 1e8 diverges at once; Optuna lets an enqueued value leave the range (warning).
    pinned.study.enqueue_trial(
        {
            "freeze_depth": 0,
            "head_lr": 1e8,
            "backbone_lr": 1e8,
            "optimizer": "sgd",
            "weight_decay": 1e-6,
        }
    )
    outcome = run_worker(pinned.study, context)
    first, second = pinned.study.trials[:2]
    assert first.state == TrialState.PRUNED, first.user_attrs
    assert first.user_attrs["stopped"].startswith("non-finite loss")
    assert second.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert outcome.finished == 2 and outcome.stopped_reason is None


def test_only_the_top_k_trials_keep_checkpoints(make_context, tmp_path: Path) -> None:
    pinned, context = make_context(
        "search.keep_checkpoints=2", "search.pruner=none", "search.trials=5"
    )
    run_worker(pinned.study, context)
    study = pinned.study
    ranked = study_mod.ranked_trials(study)
    kept = [
        t
        for t in ranked
        if "checkpoint_artifact" in t.user_attrs and not study_mod.checkpoint_removed(study, t)
    ]
    assert [t.number for t in kept] == [t.number for t in ranked[:2]]
    stored = {p.name for p in files_in(tmp_path / "artifacts")}  # named by artifact id
    checkpoints = {
        t.user_attrs["checkpoint_artifact"] for t in ranked if "checkpoint_artifact" in t.user_attrs
    }
    assert checkpoints & stored == {t.user_attrs["checkpoint_artifact"] for t in kept}
    assert len(stored - checkpoints) == 2 * len(checkpoints)  # each kept a curve and a confusion


class RecordingStore:
    """The real file store, with a log of what was written and removed, in order."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self.log: list[tuple[str, str]] = []

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self.store.open_reader(artifact_id)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.store.write(artifact_id, content_body)
        self.log.append(("write", artifact_id))

    def remove(self, artifact_id: str) -> None:
        self.store.remove(artifact_id)
        self.log.append(("remove", artifact_id))


def test_the_resume_checkpoint_outlives_everything_but_the_trials_final_state(
    make_context,
) -> None:
    """A worker killed while the finished trial's checkpoint and figures are stored must
    leave the resume checkpoint behind, or the trial's retry would start from scratch."""
    pinned, context = make_context(
        "search.keep_checkpoints=1", "search.pruner=none", "search.trials=1"
    )
    store = RecordingStore(context.store)
    run_worker(pinned.study, replace(context, store=store))
    trial = pinned.study.trials[0]
    last_resume = trial.user_attrs["resume"]["artifact"]
    checkpoint = trial.user_attrs["checkpoint_artifact"]
    assert trial.state == TrialState.COMPLETE
    assert store.log[-1] == ("remove", last_resume)
    assert store.log.index(("write", checkpoint)) < len(store.log) - 1


def test_the_budget_counts_finished_trials_and_a_rerun_only_adds_the_rest(make_context) -> None:
    pinned, context = make_context("search.trials=3")
    assert run_worker(pinned.study, context).finished == 3
    assert run_worker(pinned.study, context).finished == 3
    assert len(pinned.study.trials) == 3  # nothing ran: the budget was already met
    study_mod.set_budget(pinned, 4)  # as `tuner search --trials 4` does, for every worker
    outcome = run_worker(pinned.study, context)
    assert outcome.finished == outcome.budget == 4


def test_consecutive_failures_stop_the_worker_with_the_reason(make_context) -> None:
    pinned, context = make_context("search.max_consecutive_failures=2", "search.trials=5")
    # An optimizer train() does not know makes every trial fail the same way.
    space = replace(context.config.space, optimizer=Fixed("rmsprop"))
    broken = replace(context, config=replace(context.config, space=space))
    outcome = run_worker(pinned.study, broken)
    assert [t.state for t in pinned.study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert outcome.stopped_reason.startswith("2 trials failed in a row; the last one (#1):")
    assert "rmsprop" in outcome.stopped_reason


def test_a_worker_waits_for_a_trial_in_flight_and_runs_its_retry_within_the_budget(
    make_context,
) -> None:
    pinned, context = make_context(
        "search.trials=1", "search.heartbeat_seconds=1", "search.grace_seconds=2"
    )
    study = pinned.study
    dead = study.ask()  # a worker on another host claimed the one trial, then died
    study_storage(study).record_heartbeat(trial_id(dead))
    outcome = run_worker(study, context)  # waits: the dead trial holds the budget's one place
    assert outcome.finished == outcome.budget == 1
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert RetryFailedTrialCallback.retried_trial_number(study.trials[1]) == dead.number


def test_a_trial_whose_worker_on_this_host_is_gone_is_retried_without_waiting(
    make_context,
) -> None:
    """A search killed outright (kill -9) and run again: its trial is failed and retried at
    once, not after the 60 s heartbeat grace period."""
    pinned, context = make_context("search.trials=1")
    study = pinned.study
    dead = study.ask()
    dead.set_user_attr(
        "worker",
        {"host": socket.gethostname(), "pid": _pid_of_ended(), "pid_namespace": pid_namespace()},
    )
    started = time.monotonic()
    outcome = run_worker(study, context)
    assert outcome.finished == 1 and time.monotonic() - started < 30
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert RetryFailedTrialCallback.retried_trial_number(study.trials[1]) == dead.number


def test_a_trial_failed_as_stale_while_it_ran_is_left_to_its_retry(make_context, capsys) -> None:
    """A worker whose heartbeats stalled past the grace period (a frozen host, a suspended
    process) finds its trial failed and retried by another worker: it says so and goes on,
    instead of dying on Optuna's "Cannot tell a FAIL trial". The retry is nobody's yet."""
    pinned, context = make_context("search.trials=1")
    study, objective = pinned.study, make_objective(context)
    storage = study_storage(study)

    def failed_meanwhile(trial: optuna.Trial) -> float:
        value = objective(trial)
        storage.set_trial_state_values(trial_id(trial), state=TrialState.FAIL)  # as a stale one
        storage.get_heartbeat_stale_trial_callback()(study, storage.get_trial(trial_id(trial)))
        return value

    frozen = run_trial(study, study.ask(), failed_meanwhile)
    assert frozen.state == TrialState.FAIL
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]
    assert "worker" in study.trials[0].user_attrs and "worker" not in study.trials[1].user_attrs
    assert "was failed by another worker while it ran" in capsys.readouterr().err


def _pid_of_ended() -> int:
    """The pid of a process of this host that has ended."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid
