"""Shared fixtures: a tiny real dataset and a study on a real SQLite file."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import torch
import torchvision.datasets.cifar

from tests.helpers import format_installed, write_cifar10
from tuner.config import (
    DataConfig,
    PinnedWeights,
    ResolvedWeights,
    dimension_values,
    load_config,
)
from tuner.data.prepare import PreparedData, prepare_data
from tuner.results.export import ExportRequest, export_trial
from tuner.run.host import SearchContext
from tuner.run.workers import run_worker
from tuner.search import study as study_mod
from tuner.search.storage import artifact_store, open_storage

# Ctrl-C must reach the tuner processes the tests start, as it does from a terminal, even when
# the suite runs as a background job: its shell ignores SIGINT there, and an ignored signal is
# inherited across exec, so a tuner started from it would never see a KeyboardInterrupt.
signal.signal(signal.SIGINT, signal.default_int_handler)

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


def tiny_context(
    folder: Path, data: PreparedData, *overrides: str
) -> tuple[study_mod.PinnedStudy, SearchContext]:
    """(pinned study, context) for the tiny study with extra --set overrides, stored in folder."""
    config = load_config(None, [*TINY, *overrides])
    storage = open_storage(f"sqlite:///{folder / 'unit.db'}")
    archs = dimension_values(config.space.arch)
    weights = PinnedWeights(tuple((arch, ResolvedWeights.random_init()) for arch in archs))
    pinned = study_mod.create_pinned(storage, config, weights, data.fingerprint)
    store = artifact_store(str(folder / "artifacts"))
    context = SearchContext(config, data, weights, torch.device("cpu"), store)
    return pinned, context


def _toy_split(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy 16x16 images whose class says which half is bright: 0 = top, 1 = bottom.

    Top/bottom survives horizontal flips, so every augmentation keeps the labels true.
    """
    labels = torch.randint(0, 2, (n,), generator=generator)
    images = torch.randint(0, 80, (n, 3, 16, 16), generator=generator, dtype=torch.uint8)
    top = torch.arange(16) < 8
    bright = torch.where(labels[:, None] == 0, top, ~top)  # [n, 16 rows]
    return images + 150 * bright[:, None, :, None].to(torch.uint8), labels


@pytest.fixture(scope="module")
def toy() -> PreparedData:
    generator = torch.Generator().manual_seed(0)
    train_images, train_labels = _toy_split(64, generator)
    val_images, val_labels = _toy_split(32, generator)
    return PreparedData(
        train_images=train_images,
        train_labels=train_labels,
        val_images=val_images,
        val_labels=val_labels,
        class_names=("top", "bottom"),
        fingerprint="toy",
        skipped_files=(),
    )


@pytest.fixture
def make_context(tmp_path: Path, tiny_data: PreparedData):
    """Build (pinned study, context) for the tiny study with extra --set overrides."""
    return functools.partial(tiny_context, tmp_path, tiny_data)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Tiny models run as fast on one thread, and OpenMP stalls badly when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory, tiny_data: PreparedData) -> Path:
    """One tiny trial exported in every format installed here; shared, so treat it as read-only."""
    folder = tmp_path_factory.mktemp("exported")
    pinned, context = tiny_context(folder, tiny_data, "search.pruner=none", "search.trials=1")
    formats = ["torchscript", *(["onnx"] if format_installed("onnx") else [])]
    with single_thread():
        run_worker(pinned.study, context)
        export_trial(pinned, context.store, ExportRequest(folder / "best", formats=formats))
    return folder / "best"


@pytest.fixture(autouse=True)
def quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


# --- data fixtures shared by test_images, test_sources and test_data ---------------------


@pytest.fixture
def cifar_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small CIFAR-10 in the real format, read by the real torchvision.datasets.CIFAR10.

    torchvision compares every CIFAR file against the md5 of the official release, which
    no small fixture can match. Like torchvision's own dataset tests (datasets_utils.py
    patches ``check_integrity`` for its fake data), we replace only that checksum test with
    an existence test; parsing the pickles, labels and class names stays torchvision's.
    """
    write_cifar10(tmp_path)
    monkeypatch.setattr(
        torchvision.datasets.cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath)
    )
    return tmp_path


@pytest.fixture(scope="module")
def digits() -> PreparedData:
    return prepare_data(DataConfig(source="digits", image_size=16), with_test=True)


DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def debian_fashion_mnist() -> Path:
    """The real Fashion-MNIST files of Debian's ``dataset-fashion-mnist``; skipped where the
    package is not installed, but never in CI (`.ci/run` installs it and sets
    TUNER_REQUIRE_FASHION_MNIST=1)."""
    if not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        why = f"no Fashion-MNIST files in {DEBIAN_FASHION_MNIST}"
        if os.environ.get("TUNER_REQUIRE_FASHION_MNIST"):
            pytest.fail(f"{why}: apt-get install dataset-fashion-mnist")
        pytest.skip(f"{why} (apt-get install dataset-fashion-mnist)")
    return DEBIAN_FASHION_MNIST


POSTGRES_URL = os.environ.get(
    "TUNER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def postgres_url() -> str:
    """The machine's PostgreSQL; skipped where there is none, but never in CI.

    `.ci/run` sets TUNER_REQUIRE_POSTGRES=1 (and starts the server), so a missing server
    fails CI instead of silently skipping the multi-host tests.
    """
    try:
        storage = open_storage(POSTGRES_URL)
        storage.engine.dispose()
    except Exception as exc:
        if os.environ.get("TUNER_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL required but unreachable at {POSTGRES_URL}: {exc}")
        pytest.skip(f"no PostgreSQL at {POSTGRES_URL}")
    return POSTGRES_URL


@pytest.fixture
def postgres_study(postgres_url: str) -> Iterator[str]:
    """A study name of this test's own in the shared PostgreSQL, deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    storage = optuna.storages.RDBStorage(postgres_url)
    if name in optuna.get_all_study_names(storage):
        optuna.delete_study(study_name=name, storage=storage)
    storage.engine.dispose()


@pytest.fixture
def own_postgres_database(postgres_url: str) -> Iterator[str]:
    """A database of this test's own: a pool serves every queued study in its storage."""
    name = f"pool_{uuid.uuid4().hex[:10]}"
    server = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    with server.connect() as connection:
        connection.execute(sqlalchemy.text(f"DROP DATABASE {name} WITH (FORCE)"))
    server.dispose()
