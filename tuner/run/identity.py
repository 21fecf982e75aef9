"""Which process runs a trial: the identity every worker records on the trials it runs."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from tuner.processes import process_alive


def pid_namespace() -> str:
    """Which processes a pid names here ("" where /proc does not say): containers that share
    a host name (``docker run --network host``) each have their own."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


@dataclass(frozen=True)
class WorkerIdentity:
    """Which process ran a trial: recorded on every trial, used to seed the worker's sampler."""

    host: str = field(default_factory=socket.gethostname)
    index: int | None = None  # the launcher's worker number; None for a lone worker
    pid: int = field(default_factory=os.getpid)
    gpu: str | None = None  # the physical GPU (CUDA_VISIBLE_DEVICES) the worker is pinned to
    pid_namespace: str = field(default_factory=pid_namespace)

    @property
    def name(self) -> str:
        return f"{self.host}/{self.pid if self.index is None else self.index}"

    def owns(self, owner: Mapping[str, object]) -> bool:
        """Whether a trial's ``worker`` attribute names this process: the same host, pid
        namespace and pid. The one rule for "this worker's trials", whoever asks: the worker
        stopped mid-trial, the launcher whose child ``WorkerIdentity(pid=child)`` died.

        A pid means nothing on another host or in another container sharing its host name
        (``docker run --network host``), so all three must match.
        """
        here = (self.host, self.pid_namespace, self.pid)
        return (owner.get("host"), owner.get("pid_namespace"), owner.get("pid")) == here


def owner_gone(owner: Mapping[str, object]) -> bool:
    """Whether a trial's worker ran in a process of this host that no longer exists (a search
    killed outright): its trial can be failed at once, not after the heartbeat grace period."""
    pid = owner.get("pid")
    return isinstance(pid, int) and WorkerIdentity(pid=pid).owns(owner) and not process_alive(pid)
