"""Stop requests, in a child process of their own (the handlers are process-wide)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_a_stop_inside_a_deferred_block_waits_for_its_end_but_not_inside_allowed() -> None:
    script = textwrap.dedent(
        """
        import os, signal
        from tuner.run import signals

        signals.stop_on_signals()
        steps = []
        try:
            with signals.deferred():
                os.kill(os.getpid(), signal.SIGTERM)  # a stop while a trial is being claimed
                steps.append("claimed")
                try:
                    with signals.allowed():  # the trial itself: cut short at once
                        steps.append("not reached")
                except KeyboardInterrupt:
                    steps.append("trial failed")
                steps.append("outcome stored")
            steps.append("not reached either")
        except KeyboardInterrupt:
            steps.append("stopped")
        print(",".join(steps))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "claimed,trial failed,outcome stored,stopped"
