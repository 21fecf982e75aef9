"""process_alive: the one test of "does this pid still run", on real processes."""

from __future__ import annotations

import os
import subprocess
import sys

from tuner.processes import process_alive


def test_a_running_process_is_alive_and_an_ended_one_is_not() -> None:
    assert process_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert process_alive(child.pid)
    finally:
        child.kill()
        child.wait()  # reaped: the pid names no process any more
    assert not process_alive(child.pid)


def test_a_process_of_another_user_is_alive() -> None:
    """pid 1 always runs, usually as root: signalling it is then refused, yet it is alive."""
    assert process_alive(1)


def test_numbers_that_name_process_groups_are_no_process() -> None:
    assert not process_alive(0)  # os.kill(0, 0) would ask about our own process group
    assert not process_alive(-1)  # and -1 about every process we may signal
