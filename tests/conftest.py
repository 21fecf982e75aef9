"""Shared fixtures: a tiny real dataset and a study on a real SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch

from tuner import study as study_mod
from tuner.config import load_config
from tuner.data import PreparedData, prepare_data
from tuner.model import ResolvedWeights
from tuner.objective import SearchContext

TINY = [
    "data.per_class=24",
    "data.image_size=16",
    "model.weights=none",
    "train.epochs=2",
    "space.unfreeze_epoch={choices: [never, 1]}",
    "space.batch_size=32",
    "search.study=unit",
]


@pytest.fixture(scope="session")
def tiny_data() -> PreparedData:
    """Scikit-learn's digits, 24 per class at 16 px: real images, trains in a blink."""
    return prepare_data(load_config(None, TINY).data)


@pytest.fixture
def make_context(tmp_path: Path, tiny_data: PreparedData):
    """Build (pinned study, context) for the tiny study with extra --set overrides."""

    def make(*overrides: str) -> tuple[study_mod.PinnedStudy, SearchContext]:
        config = load_config(None, [*TINY, *overrides])
        storage = study_mod.open_storage(f"sqlite:///{tmp_path / 'unit.db'}")
        weights = ResolvedWeights.random_init()
        pinned = study_mod.create_pinned(storage, config, weights, tiny_data.fingerprint)
        store = study_mod.artifact_store(str(tmp_path / "artifacts"))
        context = SearchContext(config, tiny_data, weights, torch.device("cpu"), store)
        return pinned, context

    return make


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models run as fast on one thread, and OpenMP stalls badly when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
