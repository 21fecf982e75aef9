"""The one exception type for user mistakes."""

from __future__ import annotations


class TunerError(Exception):
    """A problem the user can fix: bad config, missing files, an unusable store.

    The message names the file, key or path and what to do about it; the command
    line prints it as one paragraph and exits with status 2, without a traceback.
    """
