"""features.py: frozen-prefix outputs cached per split, equal to the plain forward pass."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from tests.engine.test_train import CFG, CPU, PARAMS, _model, _without_time
from tuner.data.augment import normalize
from tuner.data.prepare import PreparedData
from tuner.engine.features import (
    FeatureCache,
    FeatureKey,
    FrozenPrefix,
    forward_prefix,
    forward_suffix,
)
from tuner.engine.model import set_train_mode
from tuner.engine.records import TrainResult
from tuner.engine.train import TrainEnvironment, TrainHooks, train
from tuner.engine.transfer import ResidentImages
from tuner.recipe import STAGES, TrialParams

pytestmark = pytest.mark.usefixtures("one_thread")


def _prefix(model: nn.Module, cache: FeatureCache, fingerprint: str = "toy") -> FrozenPrefix:
    return FrozenPrefix(
        model, "resnet18", cache, fingerprint, 16, torch.autocast("cpu", enabled=False), False
    )


def _features(
    prefix: FrozenPrefix, images: torch.Tensor, depth: int, split: str = "val"
) -> torch.Tensor | None:
    return prefix.features(split, ResidentImages(images), depth, amp=False, prepare=normalize)


@pytest.mark.parametrize("depth", range(len(STAGES) + 1))
def test_cached_features_give_the_plain_logits(toy: PreparedData, depth: int) -> None:
    model = _model()
    set_train_mode(model, len(STAGES))  # BatchNorm of every stage in eval mode, as when frozen
    x = toy.val_images[:24]
    with torch.no_grad():
        plain = model(normalize(x))
        cached = _features(_prefix(model, FeatureCache()), x, depth)
        split = forward_suffix(model, forward_prefix(model, normalize(x), depth), depth)
        from_cache = forward_suffix(model, cached, depth)
    assert torch.allclose(split, plain, atol=1e-5, rtol=1e-5)
    assert torch.allclose(from_cache, plain, atol=1e-5, rtol=1e-5)
    if depth == len(STAGES):
        assert cached.shape == (24, 512)  # pooled: the head alone remains


def test_the_cache_is_reused_and_keyed_by_weights_depth_and_split(toy: PreparedData) -> None:
    cache = FeatureCache()
    images = toy.val_images
    first = _features(_prefix(_model(seed=0), cache), images, 3)
    again = _features(_prefix(_model(seed=0), cache), images, 3)  # another trial, same start
    assert again is first and (cache.hits, cache.misses) == (1, 1)
    others = [
        lambda: _features(_prefix(_model(seed=1), cache), images, 3),  # other weights
        lambda: _features(_prefix(_model(seed=0), cache), images, 2),  # other depth
        lambda: _features(_prefix(_model(seed=0), cache), images, 3, split="train"),
        lambda: _features(_prefix(_model(seed=0), cache, "other data"), images, 3),
    ]
    for other in others:
        hits = cache.hits
        assert other() is not first
        assert cache.hits == hits
    # A new start drops the entries of other starts, which no later trial can hit: seed 1
    # dropped seed 0's first entry, and seed 0 then dropped seed 1's.
    assert len(cache) == 3
    misses = cache.misses
    assert _features(_prefix(_model(seed=0), cache), images, 3) is not first
    assert cache.misses == misses + 1


def test_the_cache_evicts_least_recently_used_within_its_bytes() -> None:
    keys = [FeatureKey("resnet18", "s", "w", d, "data", "val", "cpu", False) for d in range(3)]
    cache = FeatureCache(max_bytes=2 * 400)
    for key in keys[:2]:
        cache.put(key, torch.zeros(100))  # 400 bytes each
    assert cache.get(keys[0]) is not None  # keys[1] is now the least recently used
    cache.put(keys[2], torch.zeros(100))
    assert cache.get(keys[1]) is None and cache.get(keys[0]) is not None
    assert cache.bytes <= cache.max_bytes
    cache.put(
        FeatureKey("resnet18", "s", "w", 9, "data", "val", "cpu", False), torch.zeros(1000)
    )  # too big
    assert len(cache) == 2


def test_features_that_cannot_fit_are_not_computed(toy: PreparedData) -> None:
    cache = FeatureCache(max_bytes=1000)
    assert _features(_prefix(_model(), cache), toy.val_images, 1) is None
    assert len(cache) == 0


def _run(
    data: PreparedData, params: TrialParams, augment: str, cache: FeatureCache | None
) -> TrainResult:
    return train(
        _model(),
        data,
        params,
        dataclasses.replace(CFG, epochs=3),
        TrainEnvironment(CPU, seed=2, augment=augment, feature_cache=cache),
        TrainHooks(),
    )


@pytest.mark.parametrize(
    ("depth", "unfreeze_epoch", "augment"),
    [(5, None, "flip"), (3, 1, "none"), (2, 1, "crop_flip"), (4, None, "flip")],
)
def test_a_run_with_the_cache_equals_the_plain_run(
    toy: PreparedData,
    depth: int,
    unfreeze_epoch: int | None,
    augment: str,
) -> None:
    params = dataclasses.replace(
        PARAMS,
        freeze_depth=depth,
        unfreeze_epoch=unfreeze_epoch,
        unfreeze_mode="progressive",
        head_lr=0.01,
    )
    plain = _run(toy, params, augment, None)
    cache = FeatureCache()
    cached = _run(toy, params, augment, cache)
    assert cache.misses > 0 and len(cache) > 0
    for a, b in zip(_without_time(plain.history), _without_time(cached.history), strict=True):
        assert a.val_accuracy == b.val_accuracy and a.frozen_depth == b.frozen_depth
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4, abs=1e-5)
    for name, tensor in plain.best_state.items():
        assert torch.allclose(tensor.float(), cached.best_state[name].float(), atol=1e-4), name
    # a second trial of the same worker starting from the same weights hits the cache
    misses = cache.misses
    again = _run(toy, params, augment, cache)
    assert cache.misses == misses and cache.hits > 0
    assert _without_time(again.history) == _without_time(cached.history)


def test_flipped_features_are_not_built_for_a_single_epoch(toy: PreparedData) -> None:
    """Unfreezing after epoch 0: both orientations would cost twice the one epoch they serve."""
    params = dataclasses.replace(PARAMS, freeze_depth=5, unfreeze_epoch=1, head_lr=0.01)
    cache = FeatureCache()
    cached = _run(toy, params, "flip", cache)
    assert len(cache) == 1  # the validation features only
    plain = _run(toy, params, "flip", None)
    assert [m.val_accuracy for m in cached.history] == [m.val_accuracy for m in plain.history]
