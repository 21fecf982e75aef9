"""``tuner submit`` end to end: checks, the study (created or found), then one Slurm job array."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tuner.config import load_config
from tuner.errors import TunerError
from tuner.run import slurm
from tuner.run.host import describe_artifacts
from tuner.search import study as study_mod
from tuner.search.storage import artifacts_uri, open_storage, redact, storage_url
from tuner.search.warm_start import WarmStart, only_new_note

Say = Callable[[str], None]


@dataclass(frozen=True)
class SubmitRequest:
    """What the user asked for: the study (a config to create it from, or a name), the array."""

    config_path: Path | None
    sets: tuple[str, ...]
    study: str | None
    trials: int | None
    storage: str | None
    artifacts: str | None
    workers: int
    partition: str | None = None
    gpus_per_worker: int = 0
    cpus_per_worker: int = 1
    mem: str | None = None
    time: str | None = None
    grace: int = 120
    sbatch_args: tuple[str, ...] = ()
    logs: Path | None = None
    dry_run: bool = False
    warm_start: WarmStart | None = None  # seeds the study only if this creates it

    @property
    def creates(self) -> bool:
        return self.config_path is not None or bool(self.sets)


def run(request: SubmitRequest, say: Say, warn: Say) -> None:
    """Check everything Slurm and the storage can refuse, then create the study and submit.

    Nothing is created or submitted before every refusal has had its chance; a dry run only
    prints the batch script.
    """
    if request.workers < 1:
        raise TunerError(f"--workers {request.workers}: must be at least 1.")
    url = storage_url(request.storage)
    artifacts = describe_artifacts(artifacts_uri(request.artifacts))
    name = _study_name(request, url)
    job = slurm.ArrayJob(
        study=name, workers=request.workers,
        logs=(request.logs or Path("tuner-logs") / name / "slurm").resolve(),
        artifacts=artifacts, partition=request.partition,
        gpus_per_worker=request.gpus_per_worker, cpus_per_worker=request.cpus_per_worker,
        mem=request.mem, time=request.time, grace_seconds=request.grace,
        sbatch_args=request.sbatch_args,
    )  # fmt: skip
    slurm.require_sbatch()
    nodes = slurm.partition_nodes(request.partition)
    slurm.check_storage(url, nodes, job)
    warning = slurm.artifacts_warning(artifacts, nodes, job)
    if warning:
        warn(warning)
    if request.dry_run:
        say(job.script(Path.cwd()).rstrip("\n"))
        return
    if request.creates:
        import optuna

        from tuner.search import driver  # loads torch: only when a study is created here

        optuna.logging.set_verbosity(optuna.logging.ERROR)  # tuner says what it did itself
        driver.prepare(
            driver.SearchRequest(
                request.config_path, request.sets, request.study, request.trials,
                request.storage, request.artifacts, request.warm_start,
            ),
            say,
        )  # fmt: skip
    elif not study_mod.study_exists(open_storage(url, must_exist=True), name):
        raise TunerError(f"--study {name}: no such study in {redact(url)}; give its config.")
    elif request.warm_start is not None:
        say(only_new_note(name))
    job_id = slurm.submit(job, Path.cwd(), {**os.environ, "TUNER_STORAGE": url})
    say(
        f"submitted job array {job_id}: {request.workers} tuner worker task(s) for study "
        f"{name!r} in {redact(url)}\n  follow it: squeue -j {job_id}; tuner status --study "
        f"{name}\n  logs: {job.logs}/tuner-{name}-{job_id}_<task>.log\n  stop it: scancel {job_id}"
    )


def _study_name(request: SubmitRequest, url: str) -> str:
    """The study the array is for: the one its config names, or one already in the storage."""
    if request.creates:
        extra = [f"search.study={request.study}"] if request.study else []
        return load_config(request.config_path, [*request.sets, *extra]).search.study
    if request.study:
        return request.study
    return study_mod.only_study(open_storage(url, must_exist=True), True)
