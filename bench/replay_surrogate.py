"""A surrogate of the real task: any recipe of the default space answered with a learning
curve, a test accuracy and a cost per epoch, fitted on ``bench/replay_curves.py``'s records.

The curve model maps a recipe's features to its four epochs' validation accuracies and its
test accuracy at once (one multi-output regressor; the candidates are compared by 5-fold
held-out error and the best kept). Replayed trials get the model's answer plus noise of the
size and shape (correlated over epochs) that one run of a recipe shows: a replicate's
deviation from its recipe's mean over several seeds (``replay_curves.py --replicates``), or,
without replicates, a recorded recipe's held-out residual (surrogate error included: about
twice the seed noise, too much to rank searchers by). Seed noise differs from recipe to recipe
(a short warmup at a high rate swings by 20 points at epoch 1 from seed to seed, a frozen
backbone by 1), so a recipe draws its deviations from the replicated recipes nearest to it
(:data:`NOISE_NEIGHBOURS` of them), not from all: pooled, one volatile recipe's swings would
give a steady recipe an epoch it could never reach, which a search would then hand back.

Two cost models give seconds per epoch:

* ``cpu``: as tuner's engine spent them here (2 threads, 32 px, frozen stages cached while
  frozen, each trial filling its own cache), fitted on the recorded epochs' wall seconds; an
  epoch whose wall/CPU ratio is over 1.25 times the median shared the machine with something
  else (its threads waited for the cores) and is left out of the fit; plus a fixed overhead
  per trial.
* ``gpu``: a GPU at 224 px, where time follows FLOPs: each stage's forward FLOPs at 224 px
  (counted with torch's FlopCounterMode on ResNet-18), a trained stage costing three times
  its forward (backward twice), a frozen one its forward once per flip of the training
  images and once on the validation images while cached, nothing after; in units of one
  full fine-tuning epoch, scaled to seconds by the same full epoch's CPU cost so that both
  models give one budget.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
from sklearn.base import RegressorMixin, clone
from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor
from sklearn.model_selection import KFold
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tuner.recipe import NEVER, TrialParams, frozen_depth_at

EPOCHS = 4
OPTIMIZERS = ("sgd", "adam", "adamw")
FEATURES = (
    "freeze_depth", "unfreeze_epoch", "progressive", "log10 head_lr", "log10 backbone_lr",
    "sgd", "adam", "adamw", "log2 batch_size", "log10 weight_decay", "layer_decay",
    "warmup_epochs", "label_smoothing", "ema", *(f"frozen at epoch {e}" for e in range(EPOCHS)),
)  # fmt: skip
CANDIDATES: dict[str, Callable[[], RegressorMixin]] = {
    "extra trees": lambda: ExtraTreesRegressor(200, min_samples_leaf=2, random_state=0),
    "random forest": lambda: RandomForestRegressor(200, min_samples_leaf=2, random_state=0),
    "5 nearest": lambda: make_pipeline(StandardScaler(), KNeighborsRegressor(5)),
}  # fmt: skip
"""The curve models compared; all are multi-output."""


def params_of(recipe: dict) -> TrialParams:
    """A recorded recipe (``dataclasses.asdict`` of TrialParams) back as TrialParams."""
    return TrialParams(**recipe)


def features(params: TrialParams) -> np.ndarray:
    """The recipe as numbers; a backbone rate that never applies sits below the range."""
    unfreeze = EPOCHS if params.unfreeze_epoch in (None, NEVER) else params.unfreeze_epoch
    progressive = params.unfreeze_mode == "progressive" and params.unfreeze_epoch is not None
    return np.array([
        params.freeze_depth, unfreeze, float(progressive), math.log10(params.head_lr),
        math.log10(params.backbone_lr) if params.backbone_lr else -6.0,
        *(float(params.optimizer == o) for o in OPTIMIZERS), math.log2(params.batch_size),
        math.log10(max(params.weight_decay, 1e-8)), params.layer_decay, params.warmup_epochs,
        params.label_smoothing, float(params.ema > 0),
        *(frozen_depth_at(params, e) for e in range(EPOCHS)),
    ])  # fmt: skip


def targets(curve: dict) -> np.ndarray:
    """What the curve model answers: each epoch's val accuracy, then test accuracy."""
    return np.array([e["val"] for e in curve["epochs"]] + [curve["test"]])


@dataclass(frozen=True)
class HeldOut:
    """5-fold held-out error of one curve model: mean absolute error per output (points),
    and Spearman's rank correlation of the predicted and recorded best val accuracy."""

    name: str
    mae: np.ndarray  # per output: epochs 1..4 val, test
    rank: float
    residuals: np.ndarray  # out-of-fold recorded minus predicted, one row per recipe


def held_out(name: str, x: np.ndarray, y: np.ndarray) -> HeldOut:
    predicted = np.zeros_like(y)
    for train, test in KFold(5, shuffle=True, random_state=0).split(x):
        predicted[test] = clone(CANDIDATES[name]()).fit(x[train], y[train]).predict(x[test])
    residuals = y - predicted
    best, guessed = y[:, :EPOCHS].max(axis=1), predicted[:, :EPOCHS].max(axis=1)
    return HeldOut(name, 100 * np.abs(residuals).mean(axis=0), _spearman(best, guessed), residuals)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks = [np.argsort(np.argsort(v)) for v in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


@cache
def stage_flops(image_size: int = 224) -> tuple[float, ...]:
    """Forward FLOPs per image of ResNet-18's stem, layer1..layer4 and head at ``image_size``."""
    import torch
    import torchvision
    from torch.utils.flop_counter import FlopCounterMode

    model = torchvision.models.resnet18().eval()
    parts = [
        torch.nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool),
        model.layer1, model.layer2, model.layer3, model.layer4,
        torch.nn.Sequential(model.avgpool, torch.nn.Flatten(), model.fc),
    ]  # fmt: skip
    x, flops = torch.zeros(1, 3, image_size, image_size), []
    with torch.no_grad():
        for part in parts:
            with FlopCounterMode(display=False) as counter:
                x = part(x)
            flops.append(float(counter.get_total_flops()))
    return tuple(flops)


def gpu_epoch_units(params: TrialParams, epoch: int, train_images: int, val_images: int) -> float:
    """One epoch's FLOPs at 224 px in units of a full fine-tuning epoch (train and val)."""
    flops = stage_flops()
    depth = frozen_depth_at(params, epoch)
    frozen, trained = sum(flops[:depth]), sum(flops[depth:])
    full = train_images * 3 * sum(flops) + val_images * sum(flops)
    cost = train_images * 3 * trained + val_images * trained
    filled = epoch == 0 or frozen_depth_at(params, epoch - 1) != depth
    if depth and filled:  # the cache's fill: both flips of the training images, and val
        cost += (2 * train_images + val_images) * frozen
    return cost / full


@dataclass
class Surrogate:
    """The fitted task: curves, test accuracy, per-epoch cost, and the noise to add."""

    curve_model: RegressorMixin
    cost_model: RegressorMixin
    noise: np.ndarray  # rows to add to answers: seed deviations or held-out residuals
    noise_source: str
    quiet_share: float  # of the recorded epochs, those the cost model was fitted on
    full_epoch_seconds: float  # CPU cost model's mean epoch of full fine-tuning
    trial_overhead: float  # seconds per trial besides its epochs
    noise_sources: NoiseSources | None = None  # which replicated recipe each row came from

    def noise_rows(self, params: TrialParams) -> np.ndarray:
        """The deviations a run of ``params`` may show: the rows of the replicated recipes
        nearest it, or every row when the noise is not from replicates."""
        if self.noise_sources is None:
            return self.noise
        return self.noise[self.noise_sources.nearest_rows(features(params))]

    def mean(self, params: TrialParams) -> np.ndarray:
        """Noise-free answer: 4 epochs' val accuracy, then test accuracy."""
        return self.curve_model.predict(features(params)[None])[0]

    def epoch_seconds(self, params: TrialParams, model: str) -> np.ndarray:
        """Seconds of each epoch under the ``cpu`` or ``gpu`` cost model."""
        if model == "gpu":
            units = [gpu_epoch_units(params, e, 2500, 625) for e in range(EPOCHS)]
            return self.full_epoch_seconds * np.array(units)
        rows = np.stack([_cost_row(params, e) for e in range(EPOCHS)])
        return self.cost_model.predict(rows)


NOISE_NEIGHBOURS = 3
"""Replicated recipes whose seed deviations a recipe draws its noise from."""


@dataclass(frozen=True)
class NoiseSources:
    """The replicated recipes' features (standardised) and which noise rows are each one's."""

    centres: np.ndarray  # [recipes, features], standardised
    scale: tuple[np.ndarray, np.ndarray]  # the features' mean and spread over the recording
    rows: tuple[np.ndarray, ...]  # per replicated recipe, its rows of the noise

    def nearest_rows(self, x: np.ndarray) -> np.ndarray:
        mean, spread = self.scale
        distance = np.linalg.norm(self.centres - (x - mean) / spread, axis=1)
        nearest = np.argsort(distance, kind="stable")[:NOISE_NEIGHBOURS]
        return np.concatenate([self.rows[i] for i in nearest])


def _cost_row(params: TrialParams, epoch: int) -> np.ndarray:
    depth = frozen_depth_at(params, epoch)
    filled = epoch == 0 or frozen_depth_at(params, epoch - 1) != depth
    return np.concatenate([features(params), [epoch, depth, float(filled and depth > 0)]])


def seed_noise(groups: list[list[dict]]) -> np.ndarray:
    """Each run's deviation from its recipe's mean over its runs, scaled by sqrt(n / (n - 1))
    so that the deviations have the spread of single runs."""
    rows = []
    for runs in groups:
        y = np.stack([targets(c) for c in runs])
        rows.append((y - y.mean(axis=0)) * math.sqrt(len(y) / (len(y) - 1)))
    return np.concatenate(rows)


def fit(curves: list[dict], curve_model: str, trial_overhead: float,
        replicates: list[list[dict]] | None = None) -> Surrogate:  # fmt: skip
    """The surrogate of ``curves`` with the named curve model (see :data:`CANDIDATES`), its
    noise from ``replicates`` (groups of runs of one recipe) where given."""
    recipes = [params_of(c["recipe"]) for c in curves]
    x = np.stack([features(p) for p in recipes])
    y = np.stack([targets(c) for c in curves])
    sources = None
    if replicates:
        noise = seed_noise(replicates)
        source = (f"seed spread of {len(replicates)} recipes, each recipe drawing from its "
                  f"{NOISE_NEIGHBOURS} nearest")  # fmt: skip
        scale = (x.mean(axis=0), np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0))
        centres = np.stack([features(params_of(g[0]["recipe"])) for g in replicates])
        bounds = np.cumsum([0, *(len(g) for g in replicates)])
        rows = tuple(np.arange(a, b) for a, b in itertools.pairwise(bounds))
        sources = NoiseSources((centres - scale[0]) / scale[1], scale, rows)
    else:
        noise, source = held_out(curve_model, x, y).residuals, "held-out residuals"
    rows = np.stack([_cost_row(p, e) for p in recipes for e in range(EPOCHS)])
    cpu = np.array([e["cpu"] for c in curves for e in c["epochs"]])
    wall = np.array([e["wall"] for c in curves for e in c["epochs"]])
    ratio = wall / cpu
    quiet = ratio <= 1.25 * np.median(ratio)
    cost_model = ExtraTreesRegressor(200, min_samples_leaf=2, random_state=0)
    cost_model.fit(rows[quiet], wall[quiet])
    full = [p for p in recipes if p.freeze_depth == 0]
    full_epoch = float(np.mean([cost_model.predict(_cost_row(p, 1)[None])[0] for p in full]))
    return Surrogate(
        CANDIDATES[curve_model]().fit(x, y), cost_model, noise, source, float(quiet.mean()),
        full_epoch, trial_overhead, sources,
    )  # fmt: skip


def compare_models(curves: list[dict]) -> list[HeldOut]:
    """Every candidate curve model's held-out error on ``curves``, best (lowest mean) first."""
    x = np.stack([features(params_of(c["recipe"])) for c in curves])
    y = np.stack([targets(c) for c in curves])
    found = [held_out(name, x, y) for name in CANDIDATES]
    return sorted(found, key=lambda h: float(h.mae.mean()))
