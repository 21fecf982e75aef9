"""What `tuner export-best` ships: the search's checkpoint, its recipe refit, or a soup.

Each mode is a small object with one interface: the model to write, how it is tested on the
held-out split, what it adds to config.json and metrics.json, what it keeps on the study for
``tuner report``, and how the printout says it. The export itself (verify, write, atomically)
is the same for all three (:func:`tuner.results.export.export_trial`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial
from torch import nn

from tuner.data import PreparedData
from tuner.progress import Say
from tuner.results import refit as refit_mod
from tuner.results import soup as soup_mod
from tuner.results.held_out import TestEvaluation, evaluate_test, record_on_study
from tuner.search import study as study_mod
from tuner.search.storage import ArtifactStore


class ExportMode(Protocol):
    """One way of choosing the weights to export, and what it says about them."""

    model: nn.Module
    title: str  # "trial", "the recipe of trial", "a soup led by trial": then the trial number

    def test(self, data: PreparedData, batch: int) -> TestEvaluation | None:
        """The model once on the held-out test split (None without one)."""

    def entries(self, tested: TestEvaluation | None) -> dict[str, Any]:
        """What this mode adds to config.json and metrics.json."""

    def record(self, study: optuna.Study, trial: int, tested: TestEvaluation | None) -> None:
        """Keep the test result on the study, for ``tuner report``."""

    def accuracy_lines(self, recorded: float, verified: float) -> list[str]:
        """The printout's lines on val accuracy, before the test lines."""

    def test_lines(self, tested: TestEvaluation) -> list[str]:
        """The printout's lines on the held-out test split."""


@dataclass(frozen=True)
class SearchCheckpoint:
    """The trial's best-epoch weights as the search kept them."""

    model: nn.Module
    title: str = "trial"

    def test(self, data: PreparedData, batch: int) -> TestEvaluation | None:
        return evaluate_test(self.model, None, data, batch)

    def entries(self, tested: TestEvaluation | None) -> dict[str, Any]:
        return {"refit": None, "soup": None}

    def record(self, study: optuna.Study, trial: int, tested: TestEvaluation | None) -> None:
        record_on_study(study, trial, tested, None)

    def accuracy_lines(self, recorded: float, verified: float) -> list[str]:
        return [
            f"  val accuracy: recorded {recorded:.4f}, reloaded and re-evaluated "
            f"{verified:.4f} (what the search chose on)"
        ]

    def test_lines(self, tested: TestEvaluation) -> list[str]:
        return [_test_line(tested)]


@dataclass(frozen=True)
class RefitRecipe:
    """The trial's recipe trained again on training + validation images, tested beside the
    search's own checkpoint (``searched``) on the same test images."""

    model: nn.Module
    searched: nn.Module
    refit: refit_mod.Refit
    title: str = "the recipe of trial"

    def test(self, data: PreparedData, batch: int) -> TestEvaluation | None:
        return evaluate_test(self.model, self.searched, data, batch)

    def entries(self, tested: TestEvaluation | None) -> dict[str, Any]:
        return {"refit": self.refit.to_dict(), "soup": None}

    def record(self, study: optuna.Study, trial: int, tested: TestEvaluation | None) -> None:
        record_on_study(study, trial, tested, self.refit)

    def accuracy_lines(self, recorded: float, verified: float) -> list[str]:
        done = self.refit
        return [
            f"  refit on {done.train_images} training + validation images for {done.epochs} "
            f"epoch(s), seed {done.seed}, on {done.device}, in {done.seconds:.0f} s"
        ]

    def test_lines(self, tested: TestEvaluation) -> list[str]:
        assert tested.searched is not None  # a refit is tested beside the search's checkpoint
        comparison = tested.refit_vs_search
        return [
            _test_line(tested),
            f"  the search's own checkpoint on the same images: {tested.searched.describe()}",
            f"  refit vs the search's checkpoint: {comparison.points:+.1f} points "
            f"({comparison.evidence()})",
        ]


@dataclass(frozen=True)
class Souped:
    """The greedy soup of the top trials, tested beside the best single trial."""

    model: nn.Module
    soup: soup_mod.Soup
    title: str = "a soup led by trial"

    def test(self, data: PreparedData, batch: int) -> TestEvaluation | None:
        return evaluate_test(self.model, None, data, batch)

    def entries(self, tested: TestEvaluation | None) -> dict[str, Any]:
        return {"refit": None, "soup": self.soup.to_dict(tested)}

    def record(self, study: optuna.Study, trial: int, tested: TestEvaluation | None) -> None:
        soup_mod.record(study, self.soup, tested)

    def accuracy_lines(self, recorded: float, verified: float) -> list[str]:
        return self.soup.describe()

    def test_lines(self, tested: TestEvaluation) -> list[str]:
        return self.soup.describe_test(tested)


def choose_mode(
    pinned: study_mod.PinnedStudy,
    store: ArtifactStore,
    trial: FrozenTrial,
    checkpoint: nn.Module,
    data: PreparedData,
    *,
    refit: bool,
    soup: int | None,
    device: str | None,
    say: Say,
) -> ExportMode:
    """The mode asked for, built from the trial's rebuilt ``checkpoint`` (refit and soup
    train or average on ``device``, saying their progress through ``say``)."""
    if refit:
        model, done = refit_mod.refit(pinned, trial, data, device, say)
        return RefitRecipe(model, checkpoint, done)
    if soup:
        model, made = soup_mod.greedy_soup(
            pinned, store, trial, checkpoint, data, soup, device, say
        )
        return Souped(model, made)
    return SearchCheckpoint(checkpoint)


def _test_line(tested: TestEvaluation) -> str:
    return (
        f"  test accuracy: {tested.accuracy.describe()} on held-out images the search never "
        f"saw ({tested.split})"
    )
