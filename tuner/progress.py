"""Progress that suits where it goes: a tqdm bar on a terminal, plain lines in a log.

A bar redraws with carriage returns, which a log file or a Slurm job's output keeps as one
endless line; there, a plain line every few seconds (and one at the end) reads better.
This module stays free of torch and optuna so any layer can use it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

from tuner.errors import TunerError

Say = Callable[[str], None]
"""Where a step writes its lines for the user: ``print``, a list's ``append``, a log."""

INTERVAL_ENV = "TUNER_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 10.0


def interval_seconds() -> float:
    """Seconds between plain progress lines: ``$TUNER_PROGRESS_SECONDS`` or 10."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_INTERVAL
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also rejects nan
        raise TunerError(
            f"{INTERVAL_ENV}={raw!r}: expected seconds between progress lines (e.g. 30, or 0 "
            "for every update); fix or unset it."
        )
    return seconds


def duration(seconds: float) -> str:
    """``8s``, ``12m05s`` or ``1h05m``: as precise as a reader of a log needs."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def rate(per_second: float, unit: str) -> str:
    """``850 img/s`` when things are quick, ``3.1 trials/min`` when they are slow."""
    if per_second >= 1:
        return f"{per_second:.0f} {unit}/s" if per_second >= 100 else f"{per_second:.1f} {unit}/s"
    return f"{per_second * 60:.1f} {unit}/min"


class Progress:
    """Counts towards a total: a bar on a terminal, else a line per ``interval`` seconds.

    ``breakdown`` shows in parentheses after the count, ``note`` at the end of the line; on a
    terminal both go into the bar's postfix. Rate and ETA count what this reporter has seen
    since it started (a resumed study's earlier trials do not inflate them).
    """

    def __init__(
        self,
        label: str,
        total: int,
        unit: str,
        *,
        rate_unit: str | None = None,
        stream: TextIO | None = None,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.total, self.unit = label, total, unit
        self._rate_unit = rate_unit or unit
        self._stream = stream or sys.stderr
        self._interval = interval_seconds() if interval is None else interval
        self._clock = clock
        self._started = self._last_line = clock()
        self._first: int | None = None  # the count at the first update, with its time _started
        self._done, self._breakdown, self._note = 0, "", ""
        self._closed = False
        self._bar: tqdm | None = None
        if self._stream.isatty():
            self._bar = tqdm(
                total=total, unit=self._rate_unit, desc=label, dynamic_ncols=True, file=self._stream
            )

    def update(self, done: int, breakdown: str = "", note: str = "") -> None:
        """Show ``done`` of the total; a plain line at the first update, then once per interval."""
        self._done, self._breakdown, self._note = done, breakdown, note
        if self._bar is not None:
            self._bar.n = done
            self._bar.set_postfix_str(", ".join(p for p in (breakdown, note) if p))
            return
        now = self._clock()
        if self._first is None:
            self._first, self._started = done, now
        elif now - self._last_line < self._interval:
            return
        if done < self.total:  # at the total, the line at close() says it
            self._last_line = now
            self._print(self.line(final=False))

    def line(self, final: bool) -> str:
        """The plain line: count, breakdown, rate, then ETA (or the time taken, at the end)."""
        parts = [f"{self.label}: {self._done}/{self.total} {self.unit}"]
        if self._breakdown:
            parts[0] += f" ({self._breakdown})"
        elapsed = self._clock() - self._started
        gained = self._done - (self._first or 0)
        if gained > 0 and elapsed > 0:
            parts.append(rate(gained / elapsed, self._rate_unit))
            if not final:
                parts.append(f"ETA {duration((self.total - self._done) * elapsed / gained)}")
        if final:
            parts.append(f"took {duration(elapsed)}")
        if self._note:
            parts.append(self._note)
        return ", ".join(parts)

    def write(self, line: str) -> None:
        """Print a message without breaking the bar."""
        if self._bar is not None:
            self._bar.write(line, file=self._stream)
        else:
            self._print(line)

    def close(self) -> None:
        """End the bar, or print the final plain line; a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        else:
            self._print(self.line(final=True))

    def _print(self, line: str) -> None:
        print(line, file=self._stream, flush=True)
