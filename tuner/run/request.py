"""What the user asked ``tuner search`` for: plain data, free of torch and optuna.

``tuner submit`` holds one too (the study it creates is created exactly as a search would), and
it must read it without loading torch when it only submits for a study that exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tuner.search.warm_start import WarmStart


@dataclass(frozen=True)
class SearchRequest:
    """The study asked for: a config file and ``--set`` (or only a stored study's name)."""

    config_path: Path | None
    sets: tuple[str, ...] = ()
    study: str | None = None
    trials: int | None = None
    storage: str | None = None
    artifacts: str | None = None
    warm_start: WarmStart | None = None  # seeds the study only if this creates it

    def overrides(self) -> list[str]:
        extra = [f"search.study={self.study}"] if self.study else []
        if self.trials is not None:
            extra.append(f"search.trials={self.trials}")
        return [*self.sets, *extra]

    @property
    def gives_a_config(self) -> bool:
        """A config file or ``--set``: the study is created from it, or must match it."""
        return self.config_path is not None or bool(self.sets)

    def names_only_a_study(self) -> bool:
        """`tuner search --study NAME [--trials N]`: continue that study as it is stored."""
        return not self.gives_a_config and self.study is not None
