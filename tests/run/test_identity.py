"""WorkerIdentity.owns and owner_gone: the one rule for "this worker's trials", on real pids."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tuner.run.identity import WorkerIdentity, owner_gone, pid_namespace
from tuner.run.objective import make_objective


def _recorded(**changes: object) -> dict[str, object]:
    """A ``worker`` attribute as this process records it on its trials, with ``changes``."""
    here = {"host": socket.gethostname(), "pid": os.getpid(), "pid_namespace": pid_namespace()}
    return {**here, "worker": "w", "device": "cpu", **changes}


def test_a_worker_owns_the_trials_it_recorded_and_no_other() -> None:
    me = WorkerIdentity()
    assert me.owns(_recorded())
    assert not me.owns(_recorded(pid=os.getpid() + 1))
    assert not me.owns(_recorded(host="elsewhere"))
    assert not me.owns(_recorded(pid_namespace="pid:[1]"))  # another container, same host name
    assert not me.owns({key: v for key, v in _recorded().items() if key != "pid_namespace"})
    assert not me.owns({})


def test_the_objective_records_what_owns_reads(make_context) -> None:
    pinned, context = make_context("search.trials=1")
    pinned.study.optimize(make_objective(context), n_trials=1)
    recorded = pinned.study.trials[0].user_attrs["worker"]
    assert context.worker.owns(recorded)
    assert not WorkerIdentity(pid=os.getpid() + 1).owns(recorded)


def test_a_launcher_owns_its_childs_trials_through_the_childs_pid() -> None:
    """What a child worker records is owned by ``WorkerIdentity(pid=child)`` in the launcher."""
    code = (
        "import dataclasses, json; from tuner.run.identity import WorkerIdentity; "
        "print(json.dumps(dataclasses.asdict(WorkerIdentity())))"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    recorded = json.loads(child.stdout)
    assert recorded["host"] == socket.gethostname()
    assert WorkerIdentity(pid=recorded["pid"]).owns(recorded)
    assert not WorkerIdentity().owns(recorded)  # the launcher's own trials are not its child's


@pytest.mark.parametrize(
    ("changes", "gone"),
    [
        ({}, False),  # this very process runs
        ({"host": "elsewhere"}, False),  # a pid on another host tells us nothing
        ({"pid_namespace": "pid:[1]"}, False),  # nor one in another container
        ({"pid": None}, False),  # recorded without a pid
    ],
)
def test_only_an_ended_process_of_this_host_has_gone(changes: dict, gone: bool) -> None:
    assert owner_gone(_recorded(**changes)) is gone


def test_a_trial_whose_process_ended_on_this_host_has_lost_its_owner() -> None:
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    assert owner_gone(_recorded(pid=ended.pid))
    assert not owner_gone(_recorded(pid=ended.pid, host="elsewhere"))
