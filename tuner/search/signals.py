"""Stop requests: Ctrl-C and SIGTERM end a search cleanly, at once or at the next boundary."""

from __future__ import annotations

import signal
import threading

_stop_requested = threading.Event()


def stop_on_signals() -> None:
    """Make Ctrl-C and SIGTERM stop the worker, even where SIGINT was inherited ignored.

    The signal raises KeyboardInterrupt; Optuna then marks the running trial failed (never
    left RUNNING) and finished trials stay in the study. Python may swallow an exception
    raised inside a finalizer, so the request is also remembered and raised again at the
    next epoch or trial boundary (see :func:`raise_if_stop_requested`).
    """

    def interrupt(signum: int, frame: object) -> None:
        _stop_requested.set()
        raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupt)


def raise_if_stop_requested() -> None:
    """Raise KeyboardInterrupt if a stop was requested and its first raise got lost."""
    if _stop_requested.is_set():
        raise KeyboardInterrupt
