"""What a study pins beside its config: the starting weights each arch resolved to."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from tuner.dimensions import Dimension, dimension_values
from tuner.errors import TunerError


@dataclass(frozen=True)
class ResolvedWeights:
    """What a study's starting weights resolved to; kept in the study so all workers load the same.

    Attributes:
        kind: "imagenet", "none" (random init) or "file".
        name: the torchvision weights enum, e.g. "ResNet18_Weights.IMAGENET1K_V1"; "random init";
            or the absolute path of the file.
        sha256: of the file loaded (torch hub cache file or the user's file); None for random init.
        fallback_warning: set when ``auto`` fell back to random init; show it loudly at start and
            in summaries, because random init usually scores far below ImageNet weights.
    """

    kind: str
    name: str
    sha256: str | None
    fallback_warning: str | None = None

    def describe(self) -> str:
        """One line for humans."""
        if self.kind == "imagenet":
            return f"ImageNet weights {self.name} (sha256 {self.sha256[:12]})"
        if self.kind == "file":
            return f"weights file {self.name} (sha256 {self.sha256[:12]})"
        if self.fallback_warning:
            return "random init (ImageNet weights could not be loaded)"
        return "random init"

    @classmethod
    def random_init(cls) -> ResolvedWeights:
        """No pretrained weights: also how an exported checkpoint is rebuilt before loading."""
        return cls(kind="none", name="random init", sha256=None)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResolvedWeights:
        return cls(
            kind=d["kind"],
            name=d["name"],
            sha256=d["sha256"],
            fallback_warning=d.get("fallback_warning"),
        )


@dataclass(frozen=True)
class PinnedWeights:
    """The starting weights of every arch ``space.arch`` allows, resolved once per study.

    Each arch starts from its own weights (torchvision's default ImageNet weights for it, or
    random init); a weights file fits one arch only, so it needs ``space.arch`` fixed.
    """

    by_arch: tuple[tuple[str, ResolvedWeights], ...]

    def __getitem__(self, arch: str) -> ResolvedWeights:
        for name, weights in self.by_arch:
            if name == arch:
                return weights
        raise TunerError(
            f"space.arch: {arch!r} has no starting weights pinned in this study "
            f"(it pins {', '.join(self.archs)}); start a new study to search it"
        )

    @property
    def archs(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.by_arch)

    @property
    def fallback_warning(self) -> str | None:
        """The first arch's warning that it fell back to random init, if any did."""
        return next((w.fallback_warning for _, w in self.by_arch if w.fallback_warning), None)

    def describe(self) -> str:
        """One line for humans: the weights, prefixed by their arch when there are several."""
        if len(self.by_arch) == 1:
            return self.by_arch[0][1].describe()
        return "; ".join(f"{name}: {weights.describe()}" for name, weights in self.by_arch)

    def to_dict(self) -> dict[str, Any]:
        return {name: weights.to_dict() for name, weights in self.by_arch}

    @classmethod
    def from_dict(cls, d: dict[str, Any], arch: Dimension) -> PinnedWeights:
        """Read back :meth:`to_dict`; a study stored before arch was searched kept one record,
        for the arch its ``space.arch`` is now fixed at."""
        if "kind" in d:
            return cls(((str(dimension_values(arch)[0]), ResolvedWeights.from_dict(d)),))
        return cls(tuple((name, ResolvedWeights.from_dict(w)) for name, w in d.items()))
