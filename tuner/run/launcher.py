"""Local worker processes: one per slot, each pinned to its device, all sharing one study.

The parent starts ``tuner worker`` processes, shows one progress display for the whole study,
replaces a worker that dies (its trial is failed and retried from its last epoch
checkpoint at once, without waiting for the heartbeat grace period), and on Ctrl-C or
SIGTERM stops them all within seconds, leaving no trial RUNNING.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from tuner.engine import WORKERS_ON_DEVICE_ENV
from tuner.errors import TunerError
from tuner.progress import Say
from tuner.run.identity import WorkerIdentity
from tuner.run.progress import SearchProgress
from tuner.run.workers import WorkerOutcome, fail_trials_of
from tuner.search import attrs
from tuner.search import study as study_mod
from tuner.search.storage import artifact_store

STOP_SECONDS = 10.0
"""How long stopped workers get to mark their trials failed before they are killed."""
_POLL_SECONDS = 0.5
VISIBLE_DEVICES_ENV = "CUDA_VISIBLE_DEVICES"
_UUID_PREFIXES = ("GPU-", "MIG-")
# exit statuses of `tuner worker` that are a decision, not a crash: done, bad input, stopped
_DELIBERATE_EXITS = (0, 2, 130)


@dataclass(frozen=True)
class Slot:
    """One worker process to start: its number, its GPU (None: the default device), threads."""

    index: int
    gpu: str | None  # the worker's CUDA_VISIBLE_DEVICES: a physical GPU number or a UUID
    threads: int
    sharing: int = 1  # workers on this slot's GPU (--per-gpu), each with its own data copy
    asked: str | None = None  # the --gpus entry it came from (a position under a mask)


def plan_slots(workers: int | None, gpus: str | None, per_gpu: int) -> list[Slot]:
    """--workers N, or --gpus 0,1 [--per-gpu K], as the worker processes to start.

    CPU threads are shared out so that N workers on this host don't oversubscribe its cores.
    """
    if gpus is not None and workers is not None:
        raise TunerError("give --gpus or --workers, not both (--per-gpu sets workers per GPU).")
    if per_gpu < 1:
        raise TunerError(f"--per-gpu {per_gpu}: must be at least 1.")
    if gpus is not None:
        asked = [part.strip() for part in gpus.split(",") if part.strip()]
        devices = _parse_gpus(asked)
        placed = [
            (gpu, entry) for gpu, entry in zip(devices, asked, strict=True) for _ in range(per_gpu)
        ]
    else:
        if workers is not None and workers < 1:
            raise TunerError(f"--workers {workers}: must be at least 1.")
        placed = [(None, None)] * (workers or 1)
    threads = max(1, (os.cpu_count() or 1) // len(placed))
    sharing = per_gpu if gpus is not None else 1
    return [Slot(index, gpu, threads, sharing, entry) for index, (gpu, entry) in enumerate(placed)]


def _parse_gpus(asked: list[str]) -> list[str]:
    """The --gpus entries as the workers' CUDA_VISIBLE_DEVICES, checked against this host.

    Under a mask its length is the count (no CUDA call needed); unmasked, torch counts the
    host's GPUs (``device_count`` creates no CUDA context, so no GPU memory is held here).
    """
    parent = os.environ.get(VISIBLE_DEVICES_ENV)
    devices = child_visible_devices(asked, parent)
    if parent is not None:
        return devices
    import torch

    visible = torch.cuda.device_count()
    missing = [d for d in asked if (int(d) >= visible if d.isdigit() else visible == 0)]
    if missing:
        raise TunerError(
            f"--gpus {','.join(asked)}: torch sees {visible} CUDA device(s) on this host "
            f"({VISIBLE_DEVICES_ENV} is unset), so there is no GPU {', '.join(missing)}. Check "
            "nvidia-smi, or run on CPU with --workers N."
        )
    return devices


def child_visible_devices(requested: list[str], parent_visible: str | None) -> list[str]:
    """Each --gpus entry as the CUDA_VISIBLE_DEVICES its worker gets: a physical device.

    --gpus counts as torch does, within what this process sees: Slurm, Docker and Kubernetes
    confine a job with CUDA_VISIBLE_DEVICES, so under ``CUDA_VISIBLE_DEVICES=2,3`` ``--gpus
    0,1`` means physical GPUs 2 and 3, and a child given "0" would land on a GPU outside the
    job's. Unmasked (``parent_visible`` None) a number stays as it is. A UUID as ``nvidia-smi
    -L`` prints it (GPU-..., MIG-...) names one device anywhere: unmasked it is passed on for
    CUDA to resolve; under a mask of UUIDs it must be one of them and is written as the mask
    spells it, and a prefix is taken when it matches exactly one entry, as CUDA takes unique
    prefixes; under a mask of numbers it is refused, since nothing here can tell which
    physical number a UUID has.

    Raises:
        TunerError: for an entry that is neither, a position past the mask, a UUID outside
            it, an empty mask, or two entries naming one GPU; naming --gpus and the mask.
    """
    given = ",".join(requested)
    bad = [entry for entry in requested if not _is_device(entry)]
    if not requested or bad:
        raise TunerError(
            f"--gpus {given!r}: give distinct GPU numbers or UUIDs, e.g. --gpus 0,1,2,3 "
            "(`nvidia-smi -L` lists the UUIDs)."
        )
    if parent_visible is None:
        devices = list(requested)
    else:
        mask = _visible_entries(parent_visible)
        if not mask:
            raise TunerError(
                f"--gpus {given}: {VISIBLE_DEVICES_ENV}={parent_visible!r} hides every GPU from "
                f"this process, so there is none to use; unset {VISIBLE_DEVICES_ENV} or list "
                "the GPUs the search may use in it."
            )
        devices = [_within_mask(entry, mask, given, parent_visible) for entry in requested]
    doubled = sorted({d for d in devices if devices.count(d) > 1})
    if doubled:
        where = (
            "" if parent_visible is None else f" (within {VISIBLE_DEVICES_ENV}={parent_visible})"
        )
        raise TunerError(
            f"--gpus {given}: GPU {', '.join(doubled)} is given twice{where}; give distinct "
            "GPU numbers or UUIDs, and --per-gpu K for several workers on one GPU."
        )
    return devices


def _is_device(entry: str) -> bool:
    return entry.isdigit() or entry.startswith(_UUID_PREFIXES)


def _visible_entries(mask: str) -> list[str]:
    """The devices a CUDA_VISIBLE_DEVICES value leaves visible: CUDA reads it up to the first
    entry that names no device (``-1`` hides them all)."""
    entries = []
    for entry in (part.strip() for part in mask.split(",")):
        if not _is_device(entry):
            break
        entries.append(entry)
    return entries


def _within_mask(entry: str, mask: list[str], given: str, parent: str) -> str:
    """One --gpus entry as the physical device it is under this process's mask."""
    named = f"{VISIBLE_DEVICES_ENV}={parent}"
    if entry.isdigit():
        if int(entry) < len(mask):
            return mask[int(entry)]
        raise TunerError(
            f"--gpus {given}: this process sees {len(mask)} GPU(s) ({named}), numbered 0 to "
            f"{len(mask) - 1} in that list, so there is no GPU {entry}; give positions in it "
            f"(--gpus 0 is {mask[0]}), or widen {VISIBLE_DEVICES_ENV}."
        )
    if all(m.isdigit() for m in mask):
        raise TunerError(
            f"--gpus {given}: {named} names GPUs by number, so the UUID {entry} cannot be "
            f"matched to one of them; give positions in that list (0 to {len(mask) - 1})."
        )
    matches = [m for m in mask if m.startswith(entry) or entry.startswith(m)]
    if len(matches) == 1:
        return matches[0]
    what = "none" if not matches else f"{len(matches)} (give more of the UUID)"
    raise TunerError(
        f"--gpus {given}: {entry} matches {what} of the GPUs this process may use ({named}); "
        f"give one of those UUIDs, or a position 0 to {len(mask) - 1} in that list."
    )


def worker_command(study_name: str, slot: Slot) -> list[str]:
    """The `tuner worker` command line of one slot (the storage URL travels in the environment,
    so its password never shows in the process list)."""
    command = [sys.executable, "-m", "tuner.cli", "worker", "--study", study_name, "--quiet"]
    command += ["--worker-index", str(slot.index), "--threads", str(slot.threads)]
    if slot.gpu is not None:
        command += ["--device", "cuda"]
    return command


def worker_environment(slot: Slot, storage_url: str, artifacts: str) -> dict[str, str]:
    """The environment of one slot: its GPU pinned before torch starts, threads capped.

    A GPU worker's allocator uses expandable segments (unless the user configured it): trials
    of different archs and batch sizes in one long-lived worker otherwise fragment its cache,
    and K workers sharing a GPU (--per-gpu) can least afford memory reserved but unusable.
    """
    env = {
        **os.environ,
        "TUNER_STORAGE": storage_url,
        "TUNER_ARTIFACTS": artifacts,
        "OMP_NUM_THREADS": str(slot.threads),
        "PYTHONUNBUFFERED": "1",
    }
    if slot.gpu is not None:
        env[VISIBLE_DEVICES_ENV] = slot.gpu
        env["TUNER_GPU"] = slot.gpu
        env[WORKERS_ON_DEVICE_ENV] = str(slot.sharing)
        if not {"PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"} & env.keys():
            env["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
    return env


@dataclass
class _Running:
    slot: Slot
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def identity(self) -> WorkerIdentity:
        """The worker as it records itself on its trials: a process of this host."""
        return WorkerIdentity(pid=self.process.pid)


@dataclass
class Launcher:
    """Start the slots' workers, watch them and the study, stop them all on request."""

    study: optuna.Study
    slots: list[Slot]
    storage_url: str  # handed to each worker in its environment, never on its command line
    artifacts: str
    log_dir: Path
    say: Say
    _running: list[_Running] = field(default_factory=list, init=False)
    _errors: list[str] = field(default_factory=list, init=False)  # workers' bad-input lines
    _replacements: int = field(default=0, init=False)

    def run(self, max_consecutive_failures: int) -> WorkerOutcome:
        """Run until every worker has exited; returns the study's state at the end."""
        first = len(self.study.get_trials(deepcopy=False))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.say(
            f"starting {len(self.slots)} workers {_describe_slots(self.slots)}; "
            f"their logs: {self.log_dir}/"
        )
        budget = study_mod.stored_budget(self.study)
        progress = SearchProgress(self.study, budget)
        try:
            for slot in self.slots:
                self._start(slot)
            while self._running:
                time.sleep(_POLL_SECONDS)
                self._reap(progress)
                progress.refresh(self.study)
        except KeyboardInterrupt:
            progress.close()
            self._stop_all()
            raise
        progress.close()
        reason = study_mod.failure_streak(self.study, max_consecutive_failures, since=first)
        if self._errors and study_mod.finished_count(self.study) < budget:
            raise TunerError("\n".join(self._errors))
        return WorkerOutcome(
            study_mod.finished_count(self.study), study_mod.stored_budget(self.study), reason
        )

    def _start(self, slot: Slot) -> None:
        log = self.log_dir / f"worker-{slot.index}.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(
                worker_command(self.study.study_name, slot),
                env=worker_environment(slot, self.storage_url, self.artifacts),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self._running.append(_Running(slot, process, log))

    def _reap(self, progress: SearchProgress) -> None:
        """Handle workers that exited: done, refused (bad input), or died (replaced)."""
        for worker in [w for w in self._running if w.process.poll() is not None]:
            self._running.remove(worker)
            code = worker.process.returncode
            if code == 2:
                self._errors.append(f"worker {worker.slot.index}: {_last_line(worker.log)}")
            if code in _DELIBERATE_EXITS:
                continue
            retried = fail_trials_of(self.study, worker.identity.owns, retry=True)
            unmet = study_mod.finished_count(self.study) < study_mod.stored_budget(self.study)
            replace = unmet and self._replacements < len(self.slots)
            progress.write(
                f"worker {worker.slot.index} died ({describe_exit(code)}); "
                f"{len(retried)} running trial(s) failed and queued for retry"
                + (f"; starting a replacement (log: {worker.log})" if replace else "")
            )
            if replace:
                self._replacements += 1
                self._start(worker.slot)

    def _stop_all(self) -> None:
        """SIGTERM every worker (each fails its own trial), then SIGKILL what still runs."""
        for worker in self._running:
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for worker in self._running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for worker in self._running:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()
            failed = fail_trials_of(self.study, worker.identity.owns, retry=False)
            for trial in failed:  # no retry will resume from its checkpoint
                _remove_resume_checkpoint(trial.user_attrs, self.artifacts)
        self._running.clear()


def _remove_resume_checkpoint(user_attrs: dict, artifacts: str) -> None:
    recorded = user_attrs.get(attrs.RESUME)
    if recorded:
        with contextlib.suppress(Exception):
            artifact_store(artifacts).remove(recorded["artifact"])


def _describe_slots(slots: list[Slot]) -> str:
    where = f"on {describe_gpus(slots)}" if slots[0].gpu else "on this host's default device"
    per_gpu = f", {slots[0].sharing} per GPU" if slots[0].sharing > 1 else ""
    return f"{where}{per_gpu}, {slots[0].threads} CPU threads each"


def describe_gpus(slots: list[Slot]) -> str:
    """The GPU slots' physical devices in --gpus order, e.g. "GPU 2, 3 (--gpus 0,1 read within
    this process's CUDA_VISIBLE_DEVICES)"."""
    gpus = list(dict.fromkeys(s.gpu for s in slots if s.gpu is not None))
    if all(gpu.isdigit() for gpu in gpus):
        text = f"GPU {', '.join(gpus)}"
    else:
        text = ", ".join(f"GPU {gpu}" if gpu.isdigit() else gpu for gpu in gpus)
    asked = list(dict.fromkeys(s.asked for s in slots if s.gpu is not None))
    if asked != gpus and None not in asked:
        given = ",".join(map(str, asked))
        text += f" (--gpus {given} read within this process's {VISIBLE_DEVICES_ENV})"
    return text


def describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else f"exited with a user error; see {log}"
