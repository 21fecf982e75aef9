"""Which process runs a trial: the identity every worker records on the trials it runs."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field


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
