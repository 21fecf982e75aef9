"""The study as source of truth: pinned config, refusals, budget, checkpoint eviction."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner import study as study_mod
from tuner.config import load_config
from tuner.errors import TunerError
from tuner.model import ResolvedWeights
from tuner.storage import open_storage


def test_the_study_pins_config_weights_and_fingerprint(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    config = load_config(None, ["search.study=pinned", "train.epochs=3"])
    weights = ResolvedWeights("file", "/w/resnet18.pt", "ab" * 32)
    study_mod.create_pinned(storage, config, weights, "fp-123")
    loaded = study_mod.load_pinned(storage, "pinned")
    assert (loaded.config, loaded.weights, loaded.fingerprint) == (config, weights, "fp-123")
    assert loaded.study.direction.name == "MAXIMIZE"
    study_mod.check_same_config(
        loaded, load_config(None, ["search.study=pinned", "train.epochs=3", "search.trials=9"])
    )
    with pytest.raises(
        TunerError, match=r"model\.arch: study has 'resnet18', this run has 'resnet34'"
    ):
        study_mod.check_same_config(
            loaded,
            load_config(None, ["search.study=pinned", "train.epochs=3", "model.arch=resnet34"]),
        )


def test_only_study_is_picked_when_unambiguous(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'o.db'}")
    with pytest.raises(TunerError, match="no study yet"):
        study_mod.only_study(storage, required=True)
    for name in ("a", "b"):
        study_mod.create_pinned(
            storage,
            load_config(None, [f"search.study={name}"]),
            ResolvedWeights.random_init(),
            "fp",
        )
    assert study_mod.only_study(storage, required=False) is None
    with pytest.raises(TunerError, match=r"several studies \(a, b\)"):
        study_mod.only_study(storage, required=True)
