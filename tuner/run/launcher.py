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
# exit statuses of `tuner worker` that are a decision, not a crash: done, bad input, stopped
_DELIBERATE_EXITS = (0, 2, 130)


@dataclass(frozen=True)
class Slot:
    """One worker process to start: its number, its GPU (None: the default device), threads."""

    index: int
    gpu: str | None
    threads: int
    sharing: int = 1  # workers on this slot's GPU (--per-gpu), each with its own data copy


def plan_slots(workers: int | None, gpus: str | None, per_gpu: int) -> list[Slot]:
    """--workers N, or --gpus 0,1 [--per-gpu K], as the worker processes to start.

    CPU threads are shared out so that N workers on this host don't oversubscribe its cores.
    """
    if gpus is not None and workers is not None:
        raise TunerError("give --gpus or --workers, not both (--per-gpu sets workers per GPU).")
    if per_gpu < 1:
        raise TunerError(f"--per-gpu {per_gpu}: must be at least 1.")
    if gpus is not None:
        devices = _parse_gpus(gpus)
        placed = [gpu for gpu in devices for _ in range(per_gpu)]
    else:
        if workers is not None and workers < 1:
            raise TunerError(f"--workers {workers}: must be at least 1.")
        placed = [None] * (workers or 1)
    threads = max(1, (os.cpu_count() or 1) // len(placed))
    sharing = per_gpu if gpus is not None else 1
    return [Slot(index, gpu, threads, sharing) for index, gpu in enumerate(placed)]


def _parse_gpus(text: str) -> list[str]:
    devices = [part.strip() for part in text.split(",") if part.strip()]
    if not devices or not all(d.isdigit() for d in devices) or len(set(devices)) != len(devices):
        raise TunerError(f"--gpus {text!r}: give distinct GPU numbers, e.g. --gpus 0,1,2,3.")
    import torch

    visible = torch.cuda.device_count()
    missing = [d for d in devices if int(d) >= visible]
    if missing:
        raise TunerError(
            f"--gpus {text}: torch sees {visible} CUDA device(s) on this host, so there is no "
            f"GPU {', '.join(missing)}. Check nvidia-smi, or run on CPU with --workers N."
        )
    return devices


def worker_command(study_name: str, slot: Slot) -> list[str]:
    """The `tuner worker` command line of one slot (the storage URL travels in the environment,
    so its password never shows in the process list)."""
    command = [sys.executable, "-m", "tuner.cli", "worker", "--study", study_name, "--quiet"]
    command += ["--worker-index", str(slot.index), "--threads", str(slot.threads)]
    if slot.gpu is not None:
        command += ["--device", "cuda"]
    return command


def worker_environment(slot: Slot, storage_url: str, artifacts: str) -> dict[str, str]:
    """The environment of one slot: its GPU pinned before torch starts, threads capped."""
    env = {
        **os.environ,
        "TUNER_STORAGE": storage_url,
        "TUNER_ARTIFACTS": artifacts,
        "OMP_NUM_THREADS": str(slot.threads),
        "PYTHONUNBUFFERED": "1",
    }
    if slot.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = slot.gpu
        env["TUNER_GPU"] = slot.gpu
        env[WORKERS_ON_DEVICE_ENV] = str(slot.sharing)
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
            f"starting {len(self.slots)} workers "
            f"({_describe_slots(self.slots)}); their logs: {self.log_dir}/"
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
                f"worker {worker.slot.index} died ({_describe_exit(code)}); "
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
    gpus = sorted({s.gpu for s in slots if s.gpu is not None}, key=int)
    where = f"on GPU {', '.join(gpus)}" if gpus else "on this host's default device"
    return f"{where}, {slots[0].threads} CPU threads each"


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else f"exited with a user error; see {log}"
