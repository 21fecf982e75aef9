"""The study as source of truth: pinned config, refusals, budget, checkpoint eviction."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tuner.config import PinnedWeights, ResolvedWeights, load_config
from tuner.errors import TunerError
from tuner.search import study as study_mod
from tuner.search.optuna_internals import requeue
from tuner.search.storage import open_storage

RANDOM = PinnedWeights((("resnet18", ResolvedWeights.random_init()),))


def test_the_study_pins_config_weights_and_fingerprint(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    config = load_config(None, ["search.study=pinned", "train.epochs=3"])
    weights = PinnedWeights((("resnet18", ResolvedWeights("file", "/w/resnet18.pt", "ab" * 32)),))
    study_mod.create_pinned(storage, config, weights, "fp-123")
    loaded = study_mod.load_pinned(storage, "pinned")
    assert (loaded.config, loaded.weights, loaded.fingerprint) == (config, weights, "fp-123")
    assert loaded.study.direction.name == "MAXIMIZE"
    study_mod.check_same_config(
        loaded, load_config(None, ["search.study=pinned", "train.epochs=3", "search.trials=9"])
    )
    with pytest.raises(
        TunerError, match=r"space\.arch: study has 'resnet18', this run has 'resnet34'"
    ):
        study_mod.check_same_config(
            loaded,
            load_config(None, ["search.study=pinned", "train.epochs=3", "space.arch=resnet34"]),
        )


def test_only_study_is_picked_when_unambiguous(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'o.db'}")
    with pytest.raises(TunerError, match="no study yet"):
        study_mod.only_study(storage, required=True)
    for name in ("a", "b"):
        study_mod.create_pinned(
            storage,
            load_config(None, [f"search.study={name}"]),
            RANDOM,
            "fp",
        )
    assert study_mod.only_study(storage, required=False) is None
    with pytest.raises(TunerError, match=r"several studies \(a, b\)"):
        study_mod.only_study(storage, required=True)


def test_each_worker_of_each_study_gets_its_own_reproducible_sampler_seed() -> None:
    seeds = [study_mod.worker_seed(7, "pets", f"host/{i}") for i in range(8)]
    assert len(set(seeds)) == 8
    assert seeds == [study_mod.worker_seed(7, "pets", f"host/{i}") for i in range(8)]
    assert study_mod.worker_seed(8, "pets", "host/0") != seeds[0]
    # Same search.seed, another study (a warm start from "pets", say): other start-up points.
    assert study_mod.worker_seed(7, "flowers", "host/0") != seeds[0]
    assert study_mod.worker_seed(7, "flowers", None) != study_mod.worker_seed(7, "pets", None)


def test_a_raised_budget_reaches_every_worker_through_the_study(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'b.db'}")
    pinned = study_mod.create_pinned(storage, load_config(None, ["search.study=b"]), RANDOM, "fp")
    raised = study_mod.set_budget(pinned, 80)
    assert raised.config.search.trials == 80
    other_worker = study_mod.load_pinned(open_storage(f"sqlite:///{tmp_path / 'b.db'}"), "b")
    assert study_mod.stored_budget(other_worker.study) == 80
    assert other_worker.config.search.trials == 80


def test_a_failure_streak_counts_the_whole_study_from_a_start(tmp_path: Path) -> None:
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'f.db'}"))
    states = [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE, TrialState.FAIL]
    for state in states:
        trial = study.ask()
        trial.set_user_attr("fail_reason", f"CUDA out of memory in #{trial.number}")
        study.tell(trial, 1.0 if state == TrialState.COMPLETE else None, state=state)
    assert study_mod.failure_streak(study, limit=2) is None  # the complete trial broke it
    trial = study.ask()
    trial.set_user_attr("fail_reason", "CUDA out of memory in #4")
    study.tell(trial, state=TrialState.FAIL)
    reason = study_mod.failure_streak(study, limit=2)
    assert reason == "2 trials failed in a row; the last one (#4): CUDA out of memory in #4"
    assert study_mod.failure_streak(study, limit=2, since=4) is None  # a re-run starts afresh


def test_of_two_trials_claimed_at_once_the_later_goes_back_to_the_queue(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'b.db'}")
    config = load_config(None, ["search.study=budget", "search.trials=2"])
    study = study_mod.create_pinned(storage, config, RANDOM, "fp").study
    done = study.ask()
    study.tell(done, 0.5)
    first, second = study.ask(), study.ask()  # two workers found room and claimed at once
    assert not study_mod.has_room(study)  # 1 finished + 2 in flight: no room for a third
    assert study_mod.has_room(study, before=first.number)  # the earlier claim keeps its place
    assert not study_mod.has_room(study, before=second.number)  # the later one gives it up
    requeue(study, second)
    assert study.trials[second.number].state == TrialState.WAITING
    assert study.ask().number == second.number  # the next worker that asks gets it back
