"""How sure a number is: intervals for accuracies, paired tests for "A beats B".

An accuracy on n images is a binomial proportion, so it gets a Wilson score interval; two
models scored on the same images are compared on the images where exactly one is right
(exact McNemar test), never by their accuracies alone; runs over several seeds are compared
with a bootstrap over both images and seeds. Plain Python and numpy, so every layer (and
``tuner status``) can use it without torch.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile
ALPHA = 0.05  # "beyond noise" means p < ALPHA, or a 95% interval that excludes 0


@dataclass(frozen=True)
class Accuracy:
    """``correct`` of ``n`` images, with its 95% Wilson score interval."""

    correct: int
    n: int

    @property
    def value(self) -> float:
        return self.correct / self.n

    @property
    def interval(self) -> tuple[float, float]:
        """The 95% Wilson score interval: honest near 0 and 1, where the normal one is not."""
        n, p = self.n, self.correct / self.n
        centre = (p + Z_95**2 / (2 * n)) / (1 + Z_95**2 / n)
        half = Z_95 * math.sqrt(p * (1 - p) / n + Z_95**2 / (4 * n * n)) / (1 + Z_95**2 / n)
        return max(0.0, centre - half), min(1.0, centre + half)

    def describe(self) -> str:
        """E.g. "0.9694 (349 of 360; 95% CI 0.9461-0.9829)"."""
        low, high = self.interval
        return f"{self.value:.4f} ({self.correct} of {self.n}; 95% CI {low:.4f}-{high:.4f})"

    def to_dict(self) -> dict[str, object]:
        low, high = self.interval
        return {"accuracy": self.value, "correct": self.correct, "images": self.n,
                "ci95": [low, high]}  # fmt: skip

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> Accuracy:
        """Back from :meth:`to_dict` (a study attribute, metrics.json)."""
        return cls(int(stored["correct"]), int(stored["images"]))

    @classmethod
    def of(cls, correct: np.ndarray) -> Accuracy:
        """From a boolean vector: which images a model got right."""
        return cls(int(np.count_nonzero(correct)), len(correct))


def mcnemar_p(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts.

    ``a_only``: images only model A got right; ``b_only``: only B. Under "equally good" each
    discordant image is a fair coin, so the p-value is twice the binomial tail of the smaller
    count (capped at 1); images both got right or both got wrong say nothing either way.
    """
    n = a_only + b_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(a_only, b_only) + 1)) / 2**n
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class PairedComparison:
    """Model A against model B on the same ``n`` images."""

    n: int
    a_correct: int
    b_correct: int
    a_only: int  # images only A got right
    b_only: int  # images only B got right

    @classmethod
    def of(cls, a: np.ndarray, b: np.ndarray) -> PairedComparison:
        """From the two models' boolean correctness vectors over the same images, in order."""
        if len(a) != len(b):
            raise ValueError(f"paired vectors differ in length: {len(a)} and {len(b)} images")
        return cls(
            len(a),
            int(np.count_nonzero(a)),
            int(np.count_nonzero(b)),
            int(np.count_nonzero(a & ~b)),
            int(np.count_nonzero(b & ~a)),
        )

    @property
    def points(self) -> float:
        """A's accuracy minus B's, in accuracy points (percent)."""
        return 100 * (self.a_correct - self.b_correct) / self.n

    @property
    def images(self) -> int:
        """How many more images A got right than B (negative: fewer)."""
        return self.a_correct - self.b_correct

    @property
    def p_value(self) -> float:
        return mcnemar_p(self.a_only, self.b_only)

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    def evidence(self) -> str:
        """E.g. "2 of 359 images; not significant, p = 0.50" or "31 of 359 images; p < 0.001"."""
        return f"{abs(self.images)} of {self.n} images; {_verdict(self.p_value)}"

    def to_dict(self) -> dict[str, object]:
        return {
            "images": self.n, "a_correct": self.a_correct, "b_correct": self.b_correct,
            "only_a_right": self.a_only, "only_b_right": self.b_only,
            "points": self.points, "p_value": self.p_value, "test": "exact McNemar",
        }  # fmt: skip

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> PairedComparison:
        """Back from :meth:`to_dict`."""
        counts = ("images", "a_correct", "b_correct", "only_a_right", "only_b_right")
        return cls(*(int(stored[key]) for key in counts))


def _verdict(p: float) -> str:
    shown = "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"
    return shown if p < ALPHA else f"not significant, {shown}"


@dataclass(frozen=True)
class SeedsComparison:
    """Candidate A against B, each run with several seeds, on the same images.

    ``low``..``high`` is the 95% interval of the mean accuracy difference (points) under a
    bootstrap that resamples the images and, independently per candidate, the seeds, so it
    holds both the test-set noise and the seed-to-seed noise.
    """

    n: int
    points: float  # mean accuracy of A's runs minus B's, in points
    low: float
    high: float

    @property
    def images(self) -> float:
        """How many more images A's runs got right than B's, on average."""
        return self.points * self.n / 100

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0

    def evidence(self) -> str:
        """E.g. "1.3 of 359 images on average; 95% interval -0.6..1.4 points: not beyond noise"."""
        verdict = "beyond noise" if self.significant else "not beyond noise"
        return (
            f"{abs(self.images):.1f} of {self.n} images on average; 95% interval "
            f"{self.low:+.1f}..{self.high:+.1f} points: {verdict}"
        )


def compare_seeds(
    a: np.ndarray, b: np.ndarray, resamples: int = 2000, seed: int = 0
) -> SeedsComparison:
    """Bootstrap A's runs against B's: ``a`` is [runs of A, images], ``b`` [runs of B, images],
    boolean, the same images in the same order."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the runs were scored on {a.shape[1]} and {b.shape[1]} images")
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    differences = np.empty(resamples)
    for i in range(resamples):
        images = rng.integers(0, n, n)
        runs_a = a[rng.integers(0, len(a), len(a))][:, images]
        runs_b = b[rng.integers(0, len(b), len(b))][:, images]
        differences[i] = runs_a.mean() - runs_b.mean()
    low, high = np.quantile(differences, [0.025, 0.975])
    return SeedsComparison(n, 100 * (a.mean() - b.mean()), 100 * low, 100 * high)


def pack_correct(correct: np.ndarray) -> str:
    """A boolean vector as short text for a trial attribute: 1 bit per image, base64."""
    return base64.b64encode(np.packbits(np.asarray(correct, dtype=bool)).tobytes()).decode()


def unpack_correct(text: str, n: int) -> np.ndarray:
    """:func:`pack_correct`'s vector of ``n`` images back."""
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8), count=n)
    return bits.astype(bool)
