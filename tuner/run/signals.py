"""Stop requests: Ctrl-C and SIGTERM end a search cleanly, at once or at the next boundary."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_stop_requested = threading.Event()
_deferring = 0  # > 0 while a stop must wait: a trial is being claimed, or its outcome stored


def stop_on_signals() -> None:
    """Make Ctrl-C and SIGTERM stop the worker, even where SIGINT was inherited ignored.

    The signal raises KeyboardInterrupt; the running trial is then marked failed (never
    left RUNNING) and finished trials stay in the study. Python may swallow an exception
    raised inside a finalizer, so the request is also remembered and raised again at the
    next epoch or trial boundary (see :func:`raise_if_stop_requested`). Inside
    :func:`deferred` it is only remembered.
    """

    def interrupt(signum: int, frame: object) -> None:
        _stop_requested.set()
        if not _deferring:
            raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupt)


def raise_if_stop_requested() -> None:
    """Raise KeyboardInterrupt if a stop was requested and its first raise got lost."""
    if _stop_requested.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A block that a stop does not cut short: a request made inside it is raised at its end.

    A worker claims a trial (the study marks it RUNNING) and stores its outcome inside one,
    so a stop can never leave a claimed trial that nobody fails or puts back.
    """
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    raise_if_stop_requested()


@contextlib.contextmanager
def allowed() -> Iterator[None]:
    """Inside a :func:`deferred` block, a part that a stop cuts short again (running the
    trial, where the interruption is caught and the trial failed); a stop requested before
    it starts is raised as it starts."""
    global _deferring
    saved, _deferring = _deferring, 0
    try:
        raise_if_stop_requested()
        yield
    finally:
        _deferring = saved
