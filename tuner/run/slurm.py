"""``tuner submit``: one Slurm job array of ``tuner worker`` tasks for one study.

It calls ``sbatch`` itself rather than going through submitit: a task is already a plain
command (``tuner worker`` reads everything from the study), so there is no Python function
to pickle onto the nodes, and the batch script that ``--dry-run`` prints is exactly what is
submitted, for a user to read, keep or submit by hand.

Each array task is one worker: Slurm gives it its CPUs and GPUs (``--gpus-per-task`` sets
``CUDA_VISIBLE_DEVICES``), its task id is its worker index (so each samples with its own
seed), and its log goes to the folder the user names. ``--requeue`` and
``--signal=B:TERM@<grace>`` make a preempted or timed-out task stop cleanly: the worker
leaves its running trial to be retried, resumed from its last epoch by any worker, the
requeued task included. The storage URL (with its password) never enters the script: sbatch
hands the worker the submitter's ``TUNER_STORAGE`` through the environment.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tuner.errors import TunerError

_SHARED_FILESYSTEMS = (
    "nfs", "nfs4", "cifs", "smb3", "lustre", "gpfs", "beegfs", "ceph", "glusterfs",
    "fuse.glusterfs", "fuse.sshfs", "fuse.juicefs", "fuse.s3fs", "fuse.gcsfuse", "wekafs",
    "panfs", "pvfs2", "orangefs", "9p", "virtiofs",
)  # fmt: skip


class SlurmError(TunerError):
    """A Slurm client command was not found, got no answer or failed (Slurm's words in it).

    ``tuner submit --dry-run`` goes on without what it would have checked; a submit stops.
    """


@dataclass(frozen=True)
class ArrayShape:
    """What the array asks Slurm for, as the user gave it on the command line."""

    workers: int
    partition: str | None = None
    gpus_per_worker: int = 0
    cpus_per_worker: int = 1
    mem: str | None = None
    time: str | None = None
    grace_seconds: int = 120  # SIGTERM this long before the time limit: the trial is put back
    sbatch_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class ArrayJob:
    """One array of worker tasks for a study: its shape, where its logs go, its artifacts."""

    study: str | None  # None: a pool, each task a `tuner serve` worker of every queued study
    shape: ArrayShape
    logs: Path  # absolute: every task writes its log here
    artifacts: str
    idle_exit_minutes: float | None = None  # a pool's tasks end once idle this long

    @property
    def label(self) -> str:
        """The job's name after ``tuner-``: the study, or ``pool``."""
        return self.study or "pool"

    def script(self, workdir: Path) -> str:
        """The batch script: ``#SBATCH`` lines, then the worker, run in ``workdir``."""
        shape = self.shape
        options = [
            f"--job-name=tuner-{self.label}",
            f"--array=0-{shape.workers - 1}",
            "--ntasks=1",
            f"--cpus-per-task={shape.cpus_per_worker}",
            f"--output={self.logs}/%x-%A_%a.log",
            "--open-mode=append",  # a requeued task continues its log
            "--requeue",
            f"--signal=B:TERM@{shape.grace_seconds}",
        ]
        if shape.gpus_per_worker:
            options.append(f"--gpus-per-task={shape.gpus_per_worker}")
        for flag, value in (
            ("partition", shape.partition),
            ("mem", shape.mem),
            ("time", shape.time),
        ):
            if value is not None:
                options.append(f"--{flag}={value}")
        options += list(shape.sbatch_args)
        if self.study is None:
            worker = [sys.executable, "-m", "tuner.cli", "serve"]
            if self.idle_exit_minutes is not None:
                worker += ["--idle-exit", f"{self.idle_exit_minutes:g}"]
            what = "one pool worker (tuner serve) of every queued study per task"
        else:
            worker = [sys.executable, "-m", "tuner.cli", "worker", "--study", self.study]
            what = f"one tuner worker of study {self.study!r} per task"
        worker += ["--worker-index", "$SLURM_ARRAY_TASK_ID", "--threads", "$SLURM_CPUS_PER_TASK"]
        command = " ".join(arg if arg.startswith("$") else shlex.quote(arg) for arg in worker)
        return "\n".join(
            [
                "#!/bin/bash",
                *(f"#SBATCH {option}" for option in options),
                "",
                f"# written by `tuner submit`: {what}.",
                "# The storage URL comes from TUNER_STORAGE in the environment sbatch exports.",
                "set -euo pipefail",
                f"export TUNER_ARTIFACTS={shlex.quote(self.artifacts)}",
                'export OMP_NUM_THREADS="$SLURM_CPUS_PER_TASK" PYTHONUNBUFFERED=1',
                f"cd {shlex.quote(str(workdir))}",
                f"exec {command}",
                "",
            ]
        )


def require_sbatch() -> str:
    """The path of ``sbatch``, or a TunerError saying where tuner submit must run."""
    found = shutil.which("sbatch")
    if found is None:
        raise TunerError(
            "sbatch: not found on PATH. `tuner submit` runs on a Slurm login node (where "
            "sbatch and squeue work); elsewhere start workers with `tuner worker`."
        )
    return found


def partition_nodes(partition: str | None) -> int:
    """How many nodes the partition (None: the default one) has; refuses an unknown one."""
    out = _slurm(["sinfo", "-h", "-o", "%P %D"])
    sizes: dict[str, int] = {}
    default = None
    for line in out.splitlines():
        name, count = line.split()
        if name.endswith("*"):
            name = default = name[:-1]
        sizes[name] = sizes.get(name, 0) + int(count)
    wanted = partition or default
    if wanted not in sizes:
        known = ", ".join(sorted(sizes)) or "none"
        what = f"partition {partition!r} does not exist" if partition else "no default partition"
        raise TunerError(f"--partition: {what} on this cluster (partitions: {known}).")
    return sizes[wanted]


def check_storage(storage_url: str, nodes: int, job: ArrayJob) -> None:
    """Refuse SQLite for workers that may land on several nodes (it needs one host's locks)."""
    if not storage_url.startswith("sqlite") or job.shape.workers == 1 or nodes == 1:
        return
    if _pinned_to_one_node(job.shape.sbatch_args):
        return
    raise TunerError(
        f"--storage: SQLite ({storage_url}) for {job.shape.workers} workers on a partition of "
        f"{nodes} nodes: SQLite's file locks do not work across nodes on a shared file system and "
        "would corrupt or stall the study. Use PostgreSQL (--storage postgresql+psycopg://"
        "...), or keep every task on one node (--sbatch-arg=--nodelist=NODE)."
    )


def artifacts_warning(artifacts: str, nodes: int, job: ArrayJob) -> str | None:
    """A warning when workers on several nodes would keep checkpoints on a local disk."""
    if "://" in artifacts and not artifacts.startswith("file://"):
        return None  # s3:// and the like are shared by nature
    if nodes == 1 or _pinned_to_one_node(job.shape.sbatch_args):
        return None
    path = Path(artifacts.removeprefix("file://")).resolve()
    kind = filesystem_type(path)
    if kind in _SHARED_FILESYSTEMS:
        return None
    return (
        f"warning: --artifacts {path} is on a local {kind} file system, but the {nodes} nodes "
        "of this partition each see their own: a trial cannot be resumed on another node and "
        "`tuner export-best` will miss checkpoints. Put it on a shared mount "
        "(--artifacts file:///shared/tuner-artifacts) or use s3://bucket/prefix."
    )


def filesystem_type(path: Path) -> str:
    """The type of the file system holding ``path`` (the longest mount point above it)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    best, kind = "", "unknown"
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        inside = str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > len(best):
            best, kind = mount, fields[2]
    return kind


def submit(job: ArrayJob, workdir: Path, env: dict[str, str]) -> str:
    """Write the batch script into the log folder, submit it; the array's job id."""
    job.logs.mkdir(parents=True, exist_ok=True)
    script = job.logs / f"tuner-{job.label}.sbatch"
    script.write_text(job.script(workdir))
    out = _slurm(["sbatch", "--parsable", str(script)], env=env)
    job_id = out.strip().split(";")[0]
    if not job_id.isdigit():
        raise TunerError(f"sbatch: unexpected answer {out.strip()!r}; see squeue.")
    return job_id


def _pinned_to_one_node(sbatch_args: tuple[str, ...]) -> bool:
    joined = " ".join(sbatch_args)
    match = re.search(r"(?:--nodelist[= ]|-w ?)(\S+)", joined)
    return match is not None and "," not in match.group(1) and "[" not in match.group(1)


def _slurm(command: list[str], env: dict[str, str] | None = None) -> str:
    """Run a Slurm client command; its failure becomes a SlurmError with Slurm's own words."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    except FileNotFoundError:
        raise SlurmError(f"{command[0]}: not found on PATH; run on a Slurm login node.") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{command[0]}: no answer from Slurm within 60 s.") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise SlurmError(f"{command[0]}: {said[-1] if said else f'exit status {done.returncode}'}")
    return done.stdout
