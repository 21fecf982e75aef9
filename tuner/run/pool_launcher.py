"""``tuner serve`` with several workers: one pool worker process per slot, each pinned to its
device before torch starts, replaced when it dies, all stopped together on Ctrl-C or SIGTERM.

The workers print to this process's output, one plain line per event, each naming its worker,
so the pool's log says which worker took which study and trial.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from tuner.progress import Say
from tuner.run.identity import WorkerIdentity
from tuner.run.launcher import STOP_SECONDS, Slot, describe_exit, worker_environment
from tuner.run.workers import fail_trials_of
from tuner.search import queue
from tuner.search import study as study_mod
from tuner.search.storage import open_storage

_POLL_SECONDS = 0.5
_DELIBERATE_EXITS = (0, 2, 130)  # idle exit, bad input, stopped


def pool_worker_command(slot: Slot, idle_exit_minutes: float | None) -> list[str]:
    """The `tuner serve` command line of one slot's worker (the storage URL travels in the
    environment, so its password never shows in the process list)."""
    command = [sys.executable, "-m", "tuner.cli", "serve", "--worker-index", str(slot.index)]
    command += ["--threads", str(slot.threads)]
    if slot.gpu is not None:
        command += ["--device", "cuda"]
    if idle_exit_minutes is not None:
        command += ["--idle-exit", f"{idle_exit_minutes:g}"]
    return command


@dataclass
class PoolLauncher:
    """Start the slots' pool workers, replace those that die, stop them all on request."""

    slots: list[Slot]
    storage_url: str
    artifacts: str
    idle_exit_minutes: float | None
    say: Say
    _running: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict, init=False)
    _replacements: int = field(default=0, init=False)

    def run(self) -> None:
        """Run until every worker has exited (idle, or refused its input)."""
        try:
            for slot in self.slots:
                self._start(slot)
            while self._running:
                time.sleep(_POLL_SECONDS)
                self._reap()
        except KeyboardInterrupt:
            self._stop_all()
            raise

    def _start(self, slot: Slot) -> None:
        self._running[slot.index] = subprocess.Popen(
            pool_worker_command(slot, self.idle_exit_minutes),
            env=worker_environment(slot, self.storage_url, self.artifacts),
            stdin=subprocess.DEVNULL,
        )

    def _reap(self) -> None:
        """Replace a worker that died (its trials failed and queued to resume at once)."""
        for slot in self.slots:
            process = self._running.get(slot.index)
            if process is None or process.poll() is None:
                continue
            del self._running[slot.index]
            if process.returncode in _DELIBERATE_EXITS:
                continue
            retried = self._fail_trials_of(process.pid)
            replace = self._replacements < 3 * len(self.slots)
            self.say(
                f"pool worker {slot.index} died ({describe_exit(process.returncode)}); "
                f"{retried} running trial(s) failed and queued to resume"
                + ("; starting a replacement" if replace else "")
            )
            if replace:
                self._replacements += 1
                self._start(slot)

    def _stop_all(self) -> None:
        """SIGTERM every worker (each fails its trial and queues it to resume), then SIGKILL
        what still runs and queue its trials the same way."""
        for process in self._running.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for process in self._running.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for process in self._running.values():
            if process.poll() is None:
                process.kill()
                process.wait()
                self._fail_trials_of(process.pid)
        self._running.clear()

    def _fail_trials_of(self, pid: int) -> int:
        """Fail the RUNNING trials of worker ``pid`` in every queued study, each queued to
        resume from its last epoch checkpoint; how many."""
        storage = open_storage(self.storage_url, must_exist=True)
        owned = WorkerIdentity(pid=pid).owns
        failed = 0
        for entry in queue.queued_studies(storage):
            if entry.running:
                pinned = study_mod.load_pinned(storage, entry.name)  # its retry settings
                failed += len(fail_trials_of(pinned.study, owned, retry=True))
        return failed
