"""Whether a process of this host still runs: the one test behind every "its owner is gone".

A trial's worker that died and a data cache build that was killed both leave a pid behind;
the worker loop, the local launcher and the cache sweep each decide by it. It sits in the
base layer so that the data layer can use it too.
"""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists in this pid namespace (an unreaped child still does).

    Signal 0 asks without sending anything. Another user's process answers PermissionError:
    it exists. 0 and negative numbers name process groups, never one process: not alive.
    """
    if pid < 1:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
