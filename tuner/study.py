"""The study as single source of truth: storage, the pinned config, sampler, pruner, budget.

Whoever creates a study stores its full resolved config, the resolved weights and the
data fingerprint in the study's user attributes; everyone after that reads them back
and refuses to run anything else.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial, TrialState

from tuner import config as config_mod
from tuner.config import SearchConfig, StudyConfig
from tuner.errors import TunerError
from tuner.model import ResolvedWeights

DEFAULT_STORAGE = "sqlite:///tuner.db"
DEFAULT_ARTIFACTS = "tuner-artifacts"

CONFIG_ATTR = "tuner:config"
WEIGHTS_ATTR = "tuner:weights"
FINGERPRINT_ATTR = "tuner:data_fingerprint"
CHECKPOINT_ATTR = "checkpoint_artifact"
REMOVED_PREFIX = "tuner:checkpoint_removed:"

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def storage_url(cli_value: str | None) -> str:
    """--storage, else $TUNER_STORAGE, else a SQLite file in the current directory."""
    return cli_value or os.environ.get("TUNER_STORAGE") or DEFAULT_STORAGE


def artifacts_path(cli_value: str | None) -> str:
    """--artifacts, else $TUNER_ARTIFACTS, else a folder in the current directory."""
    return cli_value or os.environ.get("TUNER_ARTIFACTS") or DEFAULT_ARTIFACTS


def redact(url: str) -> str:
    """The storage URL with any password masked, safe to print."""
    try:
        return sqlalchemy.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable storage URL>"


def open_storage(url: str, must_exist: bool = False) -> optuna.storages.RDBStorage:
    """An RDB storage; SQLite gets WAL and a busy timeout so several local processes can share it.

    With ``must_exist`` (commands that only read), a missing SQLite file is an error
    rather than a new empty database.
    """
    if must_exist and url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_file():
            raise TunerError(
                f"storage {url}: no such database file ({path.resolve()}). Run `tuner search` "
                "in this folder first, or point --storage / TUNER_STORAGE at the study database."
            )
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 60}}
    else:
        kwargs = {"pool_pre_ping": True}
    try:
        if url.startswith("sqlite:///"):
            # WAL lets readers work beside one writer; it is a property of the file, so set it
            # before Optuna's engine opens any connection.
            path = url.removeprefix("sqlite:///")
            with contextlib.closing(sqlite3.connect(path, timeout=60)) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
        storage = _create_rdb_storage(url, kwargs)
    except (sqlalchemy.exc.SQLAlchemyError, sqlite3.Error, ValueError, ImportError) as exc:
        raise TunerError(
            f"storage {redact(url)}: cannot open it ({type(exc).__name__}: "
            f"{_first_line(exc, url)}). Check --storage / TUNER_STORAGE."
        ) from None
    return storage


def _create_rdb_storage(url: str, engine_kwargs: dict[str, Any]) -> optuna.storages.RDBStorage:
    """RDBStorage, retried when another process is creating the same fresh schema right now.

    Two processes opening a new database at once race to create Optuna's tables and its
    alembic version row; the loser gets an IntegrityError, and the tables are there for it
    a moment later.
    """
    attempt = 0
    while True:
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except sqlalchemy.exc.IntegrityError:
            attempt += 1
            if attempt >= _SCHEMA_RACE_RETRIES:
                raise
            time.sleep(0.2 * attempt)


_SCHEMA_RACE_RETRIES = 5


def _first_line(exc: Exception, url: str) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    password = sqlalchemy.make_url(url).password if "://" in url else None
    return text.replace(password, "***") if password else text


def artifact_store(path: str, must_exist: bool = False) -> FileSystemArtifactStore:
    """The checkpoint store: a folder, created if missing unless ``must_exist``."""
    if must_exist and not Path(path).is_dir():
        raise TunerError(
            f"artifacts {path}: no such folder. Point --artifacts / TUNER_ARTIFACTS at the "
            "folder `tuner search` wrote its checkpoints to."
        )
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise TunerError(f"artifacts {path}: cannot create the folder ({exc.strerror}).") from None
    return FileSystemArtifactStore(base_path=path)


def make_sampler(search: SearchConfig) -> optuna.samplers.BaseSampler:
    """Seeded multivariate TPE with constant liar (parallel workers don't pile on one point)."""
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=search.seed)
    with warnings.catch_warnings():
        # `group` is experimental in Optuna 5, and the conditional space needs it.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=search.seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=8
        )


def make_pruner(search: SearchConfig, epochs: int) -> optuna.pruners.BasePruner:
    """Pruners read per-epoch validation accuracy; steps are 0-based epochs."""
    if search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=epochs, reduction_factor=3
        )
    if search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if search.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


@dataclass(frozen=True)
class PinnedStudy:
    """A study together with what it pins: config, weights and data fingerprint."""

    study: optuna.Study
    config: StudyConfig
    weights: ResolvedWeights
    fingerprint: str


def study_exists(storage: optuna.storages.BaseStorage, name: str) -> bool:
    return name in optuna.get_all_study_names(storage)


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return optuna.get_all_study_names(storage)


def only_study(storage: optuna.storages.BaseStorage, required: bool) -> str | None:
    """The storage's one study when --study is not given; an error (or None) when ambiguous."""
    names = study_names(storage)
    if len(names) == 1:
        return names[0]
    if not required:
        return None
    if not names:
        raise TunerError("this storage has no study yet. Run `tuner search` first.")
    raise TunerError(
        f"this storage has several studies ({', '.join(names)}); pick one with --study NAME."
    )


def load_pinned(storage: optuna.storages.BaseStorage, name: str) -> PinnedStudy:
    """Load a study made by tuner, with its sampler and pruner rebuilt from the stored config."""
    if not study_exists(storage, name):
        known = ", ".join(study_names(storage)) or "none"
        raise TunerError(f"study {name!r} is not in this storage (studies there: {known}).")
    plain = optuna.load_study(study_name=name, storage=storage)
    attrs = plain.user_attrs
    if CONFIG_ATTR not in attrs:
        raise TunerError(f"study {name!r} was not made by tuner (it has no stored config).")
    config = config_mod.from_dict(attrs[CONFIG_ATTR])
    study = optuna.load_study(
        study_name=name,
        storage=storage,
        sampler=make_sampler(config.search),
        pruner=make_pruner(config.search, config.train.epochs),
    )
    return PinnedStudy(
        study, config, ResolvedWeights.from_dict(attrs[WEIGHTS_ATTR]), attrs[FINGERPRINT_ATTR]
    )


def check_same_config(pinned: PinnedStudy, config: StudyConfig) -> None:
    """Refuse to mix runs: a study reused with a different config is an error listing the keys."""
    differences = config_mod.identity_differences(pinned.config, config)
    if differences:
        listed = "\n  ".join(differences)
        raise TunerError(
            f"study {pinned.study.study_name!r} exists with a different config:\n  {listed}\n"
            "Use the same config, or another study name (--study NAME or --set search.study=NAME)."
        )


def create_pinned(
    storage: optuna.storages.BaseStorage,
    config: StudyConfig,
    weights: ResolvedWeights,
    fingerprint: str,
) -> PinnedStudy:
    """Create the study and pin config, weights and data fingerprint into it."""
    study = optuna.create_study(
        study_name=config.search.study,
        storage=storage,
        direction="maximize",
        sampler=make_sampler(config.search),
        pruner=make_pruner(config.search, config.train.epochs),
    )
    study.set_user_attr(CONFIG_ATTR, config_mod.to_dict(config))
    study.set_user_attr(WEIGHTS_ATTR, weights.to_dict())
    study.set_user_attr(FINGERPRINT_ATTR, fingerprint)
    return PinnedStudy(study, config, weights, fingerprint)


def finished_count(study: optuna.Study) -> int:
    """Trials that count towards the budget: complete and pruned."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def ranked_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials, best first; ties go to the earlier trial, which got there first."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(complete, key=lambda t: (-(t.value or 0.0), t.number))


def checkpoint_removed(study: optuna.Study, trial: FrozenTrial) -> bool:
    return bool(study.user_attrs.get(f"{REMOVED_PREFIX}{trial.number}"))


def evict_checkpoints(study: optuna.Study, store: FileSystemArtifactStore, keep: int) -> int:
    """Remove the checkpoints of every complete trial outside the top ``keep``; returns how many.

    A finished trial's attributes are read-only, so the removal is recorded on the study,
    one key per trial so that concurrent workers never overwrite each other.
    """
    removed = 0
    for trial in ranked_trials(study)[keep:]:
        artifact_id = trial.user_attrs.get(CHECKPOINT_ATTR)
        if artifact_id and not checkpoint_removed(study, trial):
            with contextlib.suppress(optuna.artifacts.exceptions.ArtifactNotFound):
                store.remove(artifact_id)
            study.set_user_attr(f"{REMOVED_PREFIX}{trial.number}", True)
            removed += 1
    return removed
