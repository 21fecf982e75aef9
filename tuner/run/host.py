"""One host made ready for a study's trials: the same steps for search, worker, confirm and export.

Every process that trains or exports for a study must use exactly what the study pinned: the
data (checked by its fingerprint) and the starting weights (checked by SHA-256 when the model is
built). Doing those checks in one place means every command refuses the same things, with
the same words, before any trial starts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tuner.config import DataConfig, PinnedWeights, StudyConfig
from tuner.data import (
    PreparedData,
    ProgressCallback,
    cache_path,
    entry_path,
    host_cores,
    prepare_data,
)
from tuner.engine import (
    FeatureCache,
    Placement,
    build_model,
    choose_placement,
    configure_backends,
    feature_cache_bytes,
    resolve_device,
)
from tuner.errors import TunerError
from tuner.progress import duration
from tuner.run.identity import WorkerIdentity
from tuner.run.progress import DataProgress
from tuner.search.storage import ArtifactStore, artifact_store


@dataclass(frozen=True)
class SearchContext:
    """What every trial of one worker shares: loaded once, reused for each trial."""

    config: StudyConfig
    data: PreparedData
    weights: PinnedWeights
    device: torch.device
    store: ArtifactStore
    worker: WorkerIdentity = field(default_factory=WorkerIdentity)
    feature_cache: FeatureCache = field(default_factory=FeatureCache)  # frozen-stage outputs
    placement: Placement | None = None  # None: resident; none in a launcher of GPU workers


def load_study_data(
    config: StudyConfig,
    study_name: str,
    fingerprint: str | None,
    progress: ProgressCallback | None = None,
    with_test: bool = False,
) -> PreparedData:
    """The study's data as prepared on this host (from its cache when it has one).

    ``fingerprint`` is the one the study pinned, None while the study is being created (then
    a data error is a plain config error). A mismatch means this host would train on other
    images than the study's other trials: refused. The held-out test images come only
    ``with_test``, which only ``tuner export-best`` asks for.
    """
    where = f"study {study_name!r}"
    try:
        data = prepare_data(config.data, cache_path(config.data), progress, with_test)
    except TunerError as exc:
        if fingerprint is None:
            raise
        raise TunerError(f"{where}: this host cannot load the study's data: {exc}") from None
    if fingerprint is not None and data.fingerprint != fingerprint:
        raise TunerError(
            f"{where}: the data on this host differs from the study's (its fingerprint changed: "
            f"files, classes or split under {config.data.path or config.data.root}). Give this "
            "host the data the study was created with, or start a new study with --study NAME."
        )
    return data


def ready_host(
    config: StudyConfig,
    weights: PinnedWeights,
    artifacts: str,
    *,
    study_name: str,
    fingerprint: str | None,
    worker: WorkerIdentity | None = None,
    data: PreparedData | None = None,
    gpu_workers: bool = False,
) -> SearchContext:
    """Everything this host's trials share, checked before the first one starts.

    The data is loaded and checked, the model of each arch is built once (so unloadable or
    changed weights fail here, not in every trial), the device resolved and its backends set,
    where the data lives on it chosen (``train.data_on_device``), the artifact store opened and
    the frozen-feature cache sized from ``train.feature_cache_mb`` (divided among a GPU's
    workers). ``data`` is the study's data when the caller loaded it already with
    :func:`load_study_data` (the search does, to report a data error before it resolves
    weights). With ``gpu_workers`` this process only launches GPU workers, which each ready
    their own host: it touches no CUDA function (a context would hold memory on a GPU for the
    whole search) and records no placement; its device is theirs, CUDA.
    """
    data = data or load_study_data(config, study_name, fingerprint)
    try:
        for arch, resolved in weights.by_arch:
            build_model(arch, data.num_classes, resolved)
    except TunerError as exc:
        if fingerprint is None:
            raise
        raise TunerError(
            f"study {study_name!r}: this host cannot load the study's weights "
            f"({weights.describe()}): {exc}"
        ) from None
    store, worker = artifact_store(artifacts), worker or WorkerIdentity()
    if gpu_workers:
        return SearchContext(config, data, weights, torch.device("cuda"), store, worker)
    device = resolve_device(config.train.device)
    configure_backends(device)
    return SearchContext(
        config,
        data,
        weights,
        device,
        store,
        worker,
        FeatureCache(feature_cache_bytes(config.train, device)),
        choose_placement(data, device, config.train),
    )


def prepare_ahead(data_cfg: DataConfig) -> list[str]:
    """``tuner prepare``: build this host's cache entry (with a progress bar); what to print.

    Raises:
        TunerError: without a cache to fill, or for data that cannot be prepared.
    """
    entry = entry_path(data_cfg)
    if entry is None:
        raise TunerError(
            "data.cache_dir: none, so there is no cache to prepare; set it to a local folder "
            "(--set data.cache_dir=tuner-cache)"
        )
    existed, started = entry.is_dir(), time.monotonic()
    data = prepare_data(data_cfg, cache_path(data_cfg), DataProgress())
    seconds = time.monotonic() - started
    size = data.train_images.shape[-1]
    on_disk = sum(f.stat().st_size for f in entry.iterdir()) / 1e6
    lines = [
        f"data ready: {describe_counts(data)} images, {size}x{size} px, {data.num_classes} "
        f"classes, {on_disk:.0f} MB in {entry}"
    ]
    if existed:
        lines.append("it was already prepared on this host: nothing decoded")
    else:
        count = len(data.train_labels) + len(data.val_labels) + data.test_count
        processes = data_cfg.prepare_workers or host_cores()
        lines.append(
            f"prepared in {duration(seconds)} ({count / seconds:.0f} images/s, up to "
            f"{processes} processes)"
        )
    if data.skipped_files:
        lines.append(
            f"left out {len(data.skipped_files)} unreadable file(s) (data.skip_bad_images)"
        )
    lines.append("`tuner search` and `tuner worker` on this host now start without decoding.")
    return lines


def describe_counts(data: PreparedData) -> str:
    """E.g. "1079 training, 359 validation and 359 test (a stratified holdout)"."""
    counts = f"{len(data.train_labels)} training, {len(data.val_labels)} validation"
    if data.test_count == 0:
        return f"{counts} and no test"
    return f"{counts} and {data.test_count} test ({data.test_split})"


def describe_artifacts(artifacts: str) -> str:
    """The artifact store as the user should read it: a folder's absolute path, else the URI."""
    return artifacts if "://" in artifacts else str(Path(artifacts).resolve())
