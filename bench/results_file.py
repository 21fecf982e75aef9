"""The one way a bench writes its run into ``bench/RESULTS.md``: appended, never rewritten.

A bench's run is a dated block of measurements; what the numbers mean is written by hand
around them, and a bench that replaced its section would throw that prose away. So every
bench appends, and an earlier run stays where it is until someone edits it out.
"""

from __future__ import annotations

from pathlib import Path


def append_run(out: Path | None, text: str) -> None:
    """Append ``text`` to ``out`` after a blank line; nothing when ``out`` is None."""
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as handle:
        handle.write("\n" + text)
