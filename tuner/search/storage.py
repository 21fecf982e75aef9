"""Where studies and checkpoints live: the study database and the artifact store.

Many workers on many hosts share one database. A database that is briefly unreachable
(a PostgreSQL restart, a failover, a long SQLite write lock) must not kill them, so every
storage call is retried through such an outage; a missed heartbeat is simply skipped.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar
from urllib.parse import urlparse

import optuna
import sqlalchemy
from optuna.artifacts import FileSystemArtifactStore

from tuner.errors import TunerError
from tuner.search.optuna_internals import RDB_INTERNAL_CALLS

DEFAULT_STORAGE = "sqlite:///tuner.db"
DEFAULT_ARTIFACTS = "tuner-artifacts"

OUTAGE_SECONDS = 600.0
"""How long a storage call keeps retrying while the database is unreachable."""

_T = TypeVar("_T")


def storage_url(cli_value: str | None) -> str:
    """--storage, else $TUNER_STORAGE, else a SQLite file in the current directory."""
    return cli_value or os.environ.get("TUNER_STORAGE") or DEFAULT_STORAGE


def artifacts_uri(cli_value: str | None) -> str:
    """--artifacts, else $TUNER_ARTIFACTS, else a folder in the current directory."""
    return cli_value or os.environ.get("TUNER_ARTIFACTS") or DEFAULT_ARTIFACTS


def redact(url: str) -> str:
    """The storage URL with any password masked, safe to print."""
    try:
        return sqlalchemy.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable storage URL>"


def is_transient(exc: BaseException) -> bool:
    """A lost or refused connection, or a locked SQLite file: worth waiting out and retrying."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(seen, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _retrying(method: Callable[..., _T]) -> Callable[..., _T]:
    """Retry ``method`` with backoff while the database is unreachable, up to OUTAGE_SECONDS."""

    @functools.wraps(method)
    def call(self: ResilientStorage, *args: Any, **kwargs: Any) -> _T:
        deadline = time.monotonic() + OUTAGE_SECONDS
        delay = 0.2
        warned = False
        while True:
            try:
                result = method(self, *args, **kwargs)
            except Exception as exc:
                if not is_transient(exc) or time.monotonic() > deadline:
                    raise
                if not warned:
                    print(
                        f"tuner: storage {redact(self.url)} unreachable "
                        f"({type(exc).__name__}); retrying for up to "
                        f"{OUTAGE_SECONDS / 60:.0f} min",
                        file=sys.stderr,
                    )
                    warned = True
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if warned:
                print(f"tuner: storage {redact(self.url)} reachable again", file=sys.stderr)
            return result

    return call


# Every public call a worker makes during a search (RDB_INTERNAL_CALLS adds the private
# ones Optuna's cache layer calls). Each is safe to repeat after a failed attempt (a failed
# transaction is rolled back), except that a new trial whose commit was lost in flight could
# in theory be created twice; heartbeats then fail the unowned copy.
_RETRIED = (
    "create_new_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "set_trial_param",
    "get_trial_id_from_study_id_trial_number",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial",
    "get_all_trials",
)


class ResilientStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage that rides out database outages instead of failing the worker."""

    def record_heartbeat(self, trial_id: int) -> None:
        """Skip a beat while the database is down; the next one, a few seconds on, retries."""
        try:
            super().record_heartbeat(trial_id)
        except Exception as exc:
            if not is_transient(exc):
                raise


for _name in (*_RETRIED, *RDB_INTERNAL_CALLS):
    setattr(ResilientStorage, _name, _retrying(getattr(optuna.storages.RDBStorage, _name)))


def open_storage(
    url: str, must_exist: bool = False, option: str = "--storage / TUNER_STORAGE"
) -> ResilientStorage:
    """The study database; SQLite gets WAL, a busy timeout and locking transactions, so local
    processes can share it.

    With ``must_exist`` (commands that only read), a missing SQLite file is an error
    rather than a new empty database. ``option``: where the user gave ``url``, for errors.
    """
    if must_exist and url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_file():
            raise TunerError(
                f"storage {url}: no such database file ({path.resolve()}). Run `tuner search` "
                f"in this folder first, or point {option} at the study database."
            )
    if url.startswith("sqlite"):
        kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}}
    else:
        # pre-ping replaces connections a database restart has closed
        kwargs = {"pool_pre_ping": True}
    try:
        if url.startswith("sqlite:///"):
            # WAL lets readers work beside one writer; it is a property of the file, so set it
            # before Optuna's engine opens any connection.
            path = url.removeprefix("sqlite:///")
            with contextlib.closing(sqlite3.connect(path, timeout=60)) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
        storage = _create_storage(url, kwargs)
    except (sqlalchemy.exc.SQLAlchemyError, sqlite3.Error, ValueError, ImportError) as exc:
        raise TunerError(
            f"storage {redact(url)}: cannot open it ({type(exc).__name__}: "
            f"{_first_line(exc, url)}). Check {option}."
        ) from None
    if url.startswith("sqlite:///") and ":memory:" not in url:  # a file other processes open
        _lock_sqlite_transactions(storage.engine)
    return storage


def _lock_sqlite_transactions(engine: sqlalchemy.engine.Engine) -> None:
    """Every SQLite transaction takes the database's write lock as it begins (BEGIN IMMEDIATE).

    Python's sqlite3 begins a transaction only at its first write, so Optuna's read-then-write
    steps are two steps another process can come between: popping a queued trial (read it
    WAITING, set it RUNNING) let two workers pop, and train, the same trial. PostgreSQL locks
    the row (SELECT ... FOR UPDATE); SQLite has no row locks, so the transaction holds the
    database's, for the few milliseconds it lasts (other processes wait: the busy timeout).
    """

    @sqlalchemy.event.listens_for(engine, "connect")
    def _driver_does_not_begin(dbapi_connection: sqlite3.Connection, _: object) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy begins, below

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin_immediate(connection: sqlalchemy.engine.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # the connections Optuna opened so far lack the hook above


def _create_storage(url: str, engine_kwargs: dict[str, Any]) -> ResilientStorage:
    """The storage, retried when another process is creating the same fresh schema right now.

    Two processes opening a new database at once race to create Optuna's tables and its
    alembic version row; the loser gets an IntegrityError, and the tables are there for it
    a moment later.
    """
    attempt = 0
    while True:
        try:
            return ResilientStorage(url, engine_kwargs=engine_kwargs)
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


class ArtifactStore(Protocol):
    """What Optuna's artifact stores offer (file system, S3 via boto3)."""

    def open_reader(self, artifact_id: str) -> BinaryIO: ...

    def write(self, artifact_id: str, content_body: BinaryIO) -> None: ...

    def remove(self, artifact_id: str) -> None: ...


class _PrefixedStore:
    """An S3 store whose artifacts live under a key prefix, so one bucket serves many studies."""

    def __init__(self, inner: ArtifactStore, prefix: str) -> None:
        self._inner, self._prefix = inner, prefix

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self._inner.open_reader(self._prefix + artifact_id)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self._inner.write(self._prefix + artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        self._inner.remove(self._prefix + artifact_id)


def artifact_store(uri: str, must_exist: bool = False) -> ArtifactStore:
    """The checkpoint store named by ``uri``: a folder (plain path or file://) or s3://bucket/prefix.

    Every host of a multi-host search must see the same store, so that any worker can
    resume any trial and export-best can read any checkpoint.
    """
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        return _s3_store(uri, parsed.netloc, parsed.path.lstrip("/"))
    if parsed.scheme not in ("", "file"):
        raise TunerError(
            f"artifacts {uri}: unsupported scheme {parsed.scheme!r}; use a folder path, "
            "file:///shared/path or s3://bucket/prefix."
        )
    path = parsed.path if parsed.scheme == "file" else uri
    if must_exist and not Path(path).is_dir():
        raise TunerError(
            f"artifacts {uri}: no such folder. Point --artifacts / TUNER_ARTIFACTS at the "
            "folder `tuner search` wrote its checkpoints to."
        )
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise TunerError(f"artifacts {uri}: cannot create the folder ({exc.strerror}).") from None
    return FileSystemArtifactStore(base_path=path)


def _s3_store(uri: str, bucket: str, prefix: str) -> ArtifactStore:
    if not bucket:
        raise TunerError(f"artifacts {uri}: name a bucket, e.g. s3://my-bucket/tuner.")
    try:
        from optuna.artifacts import Boto3ArtifactStore

        store = Boto3ArtifactStore(bucket)
    except ImportError:
        raise TunerError(
            f'artifacts {uri}: S3 needs boto3; install it with pip install -e ".[s3]".'
        ) from None
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return _PrefixedStore(store, prefix) if prefix else store
