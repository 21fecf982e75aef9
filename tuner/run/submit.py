"""``tuner submit`` end to end: checks, the study (created or found), then one Slurm job array."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tuner.config import load_config
from tuner.errors import TunerError
from tuner.progress import Say
from tuner.run import slurm
from tuner.run.host import describe_artifacts
from tuner.run.request import SearchRequest
from tuner.search import study as study_mod
from tuner.search.storage import artifacts_uri, open_storage, redact, storage_url
from tuner.search.warm_start import only_new_note


@dataclass(frozen=True)
class SubmitRequest:
    """What the user asked for: the study (as `tuner search` would take it), then the array."""

    search: SearchRequest
    shape: slurm.ArrayShape
    logs: Path | None = None
    dry_run: bool = False
    pool: bool = False  # the tasks serve every queued study (tuner serve), not one study
    idle_exit_minutes: float | None = None
    priority: int | None = None  # with pool: the created study is queued at this priority


def run(request: SubmitRequest, say: Say, warn: Say) -> None:
    """Check everything Slurm and the storage can refuse, then create the study and submit.

    Nothing is created or submitted before every refusal has had its chance; a dry run only
    prints the batch script, and checks with Slurm only what a reachable controller can answer.
    """
    _check_request(request)
    search = request.search
    url = storage_url(search.storage)
    artifacts = describe_artifacts(artifacts_uri(search.artifacts))
    name = _study_name(search, url) if not request.pool or search.gives_a_config else None
    folder = "pool" if request.pool else str(name)
    logs = (request.logs or Path("tuner-logs") / folder / "slurm").resolve()
    job = slurm.ArrayJob(
        None if request.pool else name, request.shape, logs, artifacts, request.idle_exit_minutes
    )
    _check_cluster(request, url, job, warn)
    if request.dry_run:
        say(job.script(Path.cwd()).rstrip("\n"))
        return
    if search.gives_a_config:
        import optuna

        from tuner.run import driver  # loads torch: only when a study is created here
        from tuner.search import confirm, queue

        optuna.logging.set_verbosity(optuna.logging.ERROR)  # tuner says what it did itself
        session = driver.open_search(search, say)
        if request.pool:
            queue.queue_study(session.pinned.study, request.priority or 0)
            say(f"queued study {name!r} at priority {request.priority or 0}")
        if session.context.config.search.confirm_top:
            say(confirm.left_to_the_user(str(name)))
    elif not request.pool and not study_mod.study_exists(open_storage(url, must_exist=True), name):
        raise TunerError(f"--study {name}: no such study in {redact(url)}; give its config.")
    elif search.warm_start is not None and not request.pool:
        say(only_new_note(name))
    job_id = slurm.submit(job, Path.cwd(), {**os.environ, "TUNER_STORAGE": url})
    what = "pool worker (tuner serve)" if request.pool else "tuner worker"
    serves = "every queued study" if request.pool else f"study {name!r}"
    follow = "tuner queue" if request.pool else f"tuner status --study {name}"
    say(
        f"submitted job array {job_id}: {request.shape.workers} {what} task(s) for {serves} in "
        f"{redact(url)}\n  follow it: squeue -j {job_id}; {follow}\n  logs: "
        f"{job.logs}/tuner-{job.label}-{job_id}_<task>.log\n  stop it: scancel {job_id}"
    )


def _check_request(request: SubmitRequest) -> None:
    """The options that only go together, refused before anything is asked of Slurm."""
    if request.shape.workers < 1:
        raise TunerError(f"--workers {request.shape.workers}: must be at least 1.")
    if not request.pool and (request.idle_exit_minutes is not None or request.priority is not None):
        raise TunerError("--idle-exit and --priority go with --pool (tasks that serve the queue).")
    if request.idle_exit_minutes is not None and request.idle_exit_minutes < 0:
        raise TunerError(f"--idle-exit {request.idle_exit_minutes:g}: give minutes, 0 or more.")


def _check_cluster(request: SubmitRequest, url: str, job: slurm.ArrayJob, warn: Say) -> None:
    """What Slurm can refuse: sbatch, the partition, SQLite or local checkpoints across nodes.

    A dry run needs no cluster to print its script: where Slurm cannot answer, it says in one
    line what it left unchecked; a real submit fails instead.
    """
    try:
        if not request.dry_run:
            slurm.require_sbatch()
        nodes = slurm.partition_nodes(request.shape.partition)
    except slurm.SlurmError as exc:
        if not request.dry_run:
            raise
        warn(
            f"note: Slurm could not be asked ({str(exc).rstrip('.')}), so this dry run did not "
            "check the partition, nor whether its nodes can share SQLite storage and local "
            "checkpoints; `tuner submit` without --dry-run checks them."
        )
        return
    slurm.check_storage(url, nodes, job)
    warning = slurm.artifacts_warning(job.artifacts, nodes, job)
    if warning:
        warn(warning)


def _study_name(search: SearchRequest, url: str) -> str:
    """The study the array is for: the one its config names, or one already in the storage."""
    if search.gives_a_config:
        return load_config(search.config_path, search.overrides()).search.study
    if search.study:
        return search.study
    return study_mod.only_study(open_storage(url, must_exist=True), True)
