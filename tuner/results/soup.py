"""``export-best --soup K``: a greedy model soup of the search's top checkpoints.

Runs fine-tuned from one starting point tend to land in one basin of the loss, so the average
of their weights is often better than any one of them, at no cost at inference (Wortsman et
al., "Model soups", ICML 2022). The greedy recipe: the top K trials by val accuracy, the best
first; each next one joins the average only if the soup's val accuracy does not drop.
Averaged BatchNorm running statistics describe no network, so in the layers where the
ingredients' differ they are re-estimated on the training images before every evaluation: each
decision sees the statistics the exported soup will have. Layers whose statistics every
ingredient shares (stages they all kept frozen) keep them: the layers after them learned with
those. Only once the soup is chosen are the test images read, for the soup and the best single
trial alike, paired image by image.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial
from torch import nn

from tuner import stats
from tuner.config import StudyConfig
from tuner.data import PreparedData, normalize
from tuner.engine import evaluate, resolve_device
from tuner.errors import TunerError
from tuner.progress import Say
from tuner.results.checkpoints import read_checkpoint
from tuner.results.held_out import TestEvaluation, evaluate_test, record_on_study
from tuner.search import attrs
from tuner.search import study as study_mod
from tuner.search.storage import ArtifactStore

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Step:
    """One ingredient tried, in order; the first is the best trial alone."""

    trial: int
    val_accuracy: float  # the trial's own, as the search recorded it (what ranks it)
    soup_val_accuracy: float  # the soup's with it added; the first: the best trial re-measured
    kept: bool


@dataclass(frozen=True)
class Soup:
    """What the greedy soup tried and kept, beside the best single trial."""

    asked: int  # --soup K
    arch: str
    steps: tuple[Step, ...]
    bn_layers: tuple[str, ...]  # BatchNorm layers re-estimated on the training images
    bn_images: int  # the training images they were re-estimated on
    single_test: TestEvaluation | None  # the best single trial's; None: no test split

    @property
    def ingredients(self) -> list[Step]:
        return [step for step in self.steps if step.kept]

    @property
    def single(self) -> Step:
        return self.steps[0]

    @property
    def val_accuracy(self) -> float:
        return self.ingredients[-1].soup_val_accuracy

    def versus_single(self, tested: TestEvaluation | None) -> stats.PairedComparison | None:
        """The soup (``tested``) against the best single trial on the same test images."""
        if tested is None or self.single_test is None:
            return None
        return stats.PairedComparison.of(tested.correct, self.single_test.correct)

    def to_dict(self, tested: TestEvaluation | None) -> dict[str, Any]:
        """config.json's, metrics.json's and the study's ``soup``; ``tested``: the soup's test."""
        out: dict[str, Any] = {
            "method": "greedy soup (Wortsman et al., 2022): the top trials by val accuracy, "
            "each averaged in only if the soup's val accuracy does not drop",
            "asked": self.asked,
            "arch": self.arch,
            "ingredients": [
                {"trial": step.trial, "val_accuracy": step.val_accuracy}
                for step in self.ingredients
            ],
            "rejected": [step.trial for step in self.steps if not step.kept],
            "tried": [dataclasses.asdict(step) for step in self.steps],
            "bn_recomputed": bool(self.bn_layers),
            "bn_layers": list(self.bn_layers),
            "bn_images": self.bn_images if self.bn_layers else None,
            "val": {
                "soup": self.val_accuracy,
                "best_single": self.single.soup_val_accuracy,
                "best_single_trial": self.single.trial,
            },
        }
        versus = self.versus_single(tested)
        if versus is not None:
            out["test"] = {
                "soup": tested.accuracy.to_dict(),
                "best_single": self.single_test.accuracy.to_dict(),
                "soup_vs_best_single": versus.to_dict(),
            }
        return out

    def describe(self) -> list[str]:
        """The printout's lines on what was kept, and the val accuracy beside the best single."""
        kept = ", ".join(f"#{step.trial}" for step in self.ingredients)
        rejected = ", ".join(f"#{step.trial}" for step in self.steps if not step.kept)
        statistics = (
            f"re-estimated on {self.bn_images} training images in {len(self.bn_layers)} layers "
            "(the rest were the same in every ingredient)"
            if self.bn_layers
            else "the ingredients' own (the same in every one)"
            if len(self.ingredients) > 1
            else "the trial's own"
        )
        return [
            f"  soup of trials {kept}: kept {len(self.ingredients)} of the top "
            f"{len(self.steps)} {self.arch} trials tried (rejected: {rejected or 'none'})",
            f"  BatchNorm statistics: {statistics}",
            f"  val accuracy: soup {self.val_accuracy:.4f}, best single trial "
            f"#{self.single.trial} {self.single.soup_val_accuracy:.4f} (what the soup chose on)",
        ]

    def describe_test(self, tested: TestEvaluation) -> list[str]:
        """The soup's and the best single trial's test accuracy, and the paired test."""
        versus = self.versus_single(tested)
        assert versus is not None and self.single_test is not None  # both tested, or neither
        return [
            f"  test accuracy on held-out images the search never saw ({tested.split}):",
            f"    soup: {tested.accuracy.describe()}",
            f"    best single trial #{self.single.trial}: {self.single_test.accuracy.describe()}",
            f"  soup vs best single: {versus.points:+.1f} points ({versus.evidence()}, exact "
            "McNemar)",
        ]


def check_size(config: StudyConfig, size: int | None) -> None:
    """Refuse a soup of more trials than the search keeps checkpoints of, before any work."""
    keep = config.search.keep_checkpoints
    if size is not None and size > keep:
        raise TunerError(
            f"--soup {size} needs the top {size} trials' checkpoints, but this study's "
            f"search.keep_checkpoints is {keep}: only the top {keep} complete trials kept theirs. "
            f"Use --soup {keep} or less, or search a new study with "
            f"--set search.keep_checkpoints={size} (or more)."
        )


def greedy_soup(
    pinned: study_mod.PinnedStudy,
    store: ArtifactStore,
    best: FrozenTrial,
    single: nn.Module,
    data: PreparedData,
    size: int,
    device: str | None,
    say: Say,
) -> tuple[nn.Module, Soup]:
    """The greedy soup of up to ``size`` trials led by ``best`` (whose model is ``single``):
    the eval-mode soup on the CPU, and what was tried. ``device`` overrides ``train.device``
    for the BatchNorm passes and the val evaluations."""
    config = pinned.config
    keep, batch = config.search.keep_checkpoints, config.train.eval_batch_size
    arch = _start(best, config)[0]
    trials = _ingredients(pinned.study, config, best, size, say)
    where = resolve_device(device or config.train.device)

    def val_accuracy(model: nn.Module) -> float:
        return evaluate(model, data.val_images, data.val_labels, where, batch)[0]

    soup, states, recomputed = single, [single.state_dict()], ()
    current = val_accuracy(copy.deepcopy(single).to(where))
    steps = [Step(best.number, best.value, current, kept=True)]
    for trial in trials[1:]:
        mixed = [*states, read_checkpoint(pinned.study, store, trial, keep)]
        candidate, recompute = _mix(single, mixed, data.train_images, batch, where)
        accuracy = val_accuracy(candidate)
        kept = accuracy >= current
        steps.append(Step(trial.number, trial.value, accuracy, kept))
        say(
            f"soup: + trial #{trial.number} (val {trial.value:.4f}): soup val {accuracy:.4f} "
            + (f">= {current:.4f}, kept" if kept else f"< {current:.4f}, rejected")
        )
        if kept:
            soup, states, current, recomputed = candidate, mixed, accuracy, recompute
    tested_single = evaluate_test(single, None, data, batch)  # the soup is chosen: test now
    done = Soup(size, arch, tuple(steps), recomputed, len(data.train_labels), tested_single)
    return soup.cpu().eval(), done


def record(study: optuna.Study, soup: Soup, tested: TestEvaluation | None) -> None:
    """Keep the soup on the study (``tuner:soup``), and the best single trial's test result
    where a plain export of it keeps one, for ``tuner report``."""
    record_on_study(study, soup.single.trial, soup.single_test, None)
    study.set_user_attr(attrs.SOUP, soup.to_dict(tested))


def _start(trial: FrozenTrial, config: StudyConfig) -> tuple[str | None, int]:
    """What a trial started from: its arch (so its pinned weights) and its init seed."""
    params = attrs.trial_params(trial, config.space)
    arch = params.arch if params is not None else None
    return arch, attrs.init_seed(trial.user_attrs, config.train.seed)


def _ingredients(
    study: optuna.Study,
    config: StudyConfig,
    best: FrozenTrial,
    size: int,
    say: Say,
) -> list[FrozenTrial]:
    """``best`` and the next complete trials by val accuracy that started from the same model
    (arch, so pinned weights, and init seed) and still have a checkpoint; ``size`` at most."""
    start = _start(best, config)
    ranked = [t for t in study_mod.ranked_trials(study) if t.number != best.number]
    same = [t for t in ranked if _start(t, config) == start]
    others = [t for t in same if study_mod.has_checkpoint(study, t)]
    chosen = [best, *others[: size - 1]]
    if len(chosen) < size:
        apart = len(ranked) - len(same)
        say(
            f"soup: only {len(chosen)} complete trial(s) that started from trial "
            f"#{best.number}'s {start[0]} model still have a checkpoint, not {size}: souping "
            "those" + (f" ({apart} other(s) started elsewhere)" if apart else "")
        )
    return chosen


def _mix(
    template: nn.Module,
    states: Sequence[State],
    train_images: torch.Tensor,
    batch_size: int,
    device: torch.device,
) -> tuple[nn.Module, tuple[str, ...]]:
    """``template``'s network holding the average of ``states``, on ``device`` in eval mode,
    and the BatchNorm layers whose statistics were re-estimated (where the ingredients' differ)."""
    model = copy.deepcopy(template)
    model.load_state_dict(average_states(states))
    model.to(device)
    layers = bn_layers_that_differ(states)
    if layers:
        recompute_bn_stats(model, train_images, batch_size, device, layers)
    return model.eval(), layers


def average_states(states: Sequence[State]) -> State:
    """The uniform average of the floating-point tensors of ``states``; the others (BatchNorm's
    batch counters) are taken from the first, as an average of counts means nothing."""
    first = states[0]
    return {
        name: torch.stack([state[name] for state in states]).mean(0)
        if tensor.is_floating_point()
        else tensor.clone()
        for name, tensor in first.items()
    }


def bn_layers_that_differ(states: Sequence[State]) -> tuple[str, ...]:
    """The BatchNorm layers (module names) whose running statistics differ between ``states``:
    the ones averaging breaks. Identical ones (a stage every trial kept frozen) stay true."""
    first = states[0]
    layers = [name.removesuffix(".running_mean") for name in first if name.endswith("running_mean")]

    def shared(layer: str) -> bool:
        return all(
            torch.equal(state[f"{layer}.{stat}"], first[f"{layer}.{stat}"])
            for state in states[1:]
            for stat in ("running_mean", "running_var")
        )

    return tuple(layer for layer in layers if not shared(layer))


@torch.no_grad()
def recompute_bn_stats(
    model: nn.Module,
    images: torch.Tensor,
    batch_size: int,
    device: torch.device,
    layers: Collection[str],
) -> None:
    """Re-estimate the running statistics of the BatchNorm ``layers`` (module names) as the
    plain average over the uint8 ``images`` (normalised, not augmented): one no-grad pass,
    those layers in train mode with momentum None (as torch's SWA ``update_bn``), every other
    layer in eval mode, as the model will run. ``model`` is on ``device``; its mode is kept.

    A last batch of one image is left out: BatchNorm cannot take the statistics of one value
    per channel (a ResNet's last stage at small image sizes is 1x1).
    """
    wanted = set(layers)
    norms = [module for name, module in model.named_modules() if name in wanted]
    momenta = [norm.momentum for norm in norms]
    was_training = model.training
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    usable = images[: len(images) - (len(images) % batch_size == 1)]
    for start in range(0, len(usable), batch_size):
        model(normalize(usable[start : start + batch_size].to(device)))
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.train(was_training)
