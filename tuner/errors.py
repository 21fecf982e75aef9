"""The one exception type for user mistakes."""

from __future__ import annotations


class TunerError(Exception):
    """A problem the user can fix: bad config, missing files, an unusable store.

    The message names the file, key or path and what to do about it; the command
    line prints it as one paragraph and exits with status 2, without a traceback.
    """


class DeviceFailedError(Exception):
    """The accelerator is unusable for this process (a CUDA error that is not out-of-memory:
    an illegal address, a device-side assert). Every later kernel would fail as well, so the
    worker fails its trial for a retry and exits with status 3; a fresh process takes over.
    """
