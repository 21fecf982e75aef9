"""epoch.py and evaluate.validate: cached frozen-prefix features or images, the same numbers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import nn

from tests.engine.test_train import CPU, PARAMS, _model
from tuner.data.prepare import PreparedData
from tuner.engine.epoch import BatchSource, train_one_epoch
from tuner.engine.evaluate import evaluate, validate
from tuner.engine.features import FeatureCache, FrozenPrefix
from tuner.engine.model import set_frozen, set_train_mode
from tuner.engine.optim import make_optimizer
from tuner.engine.transfer import ResidentImages

pytestmark = pytest.mark.usefixtures("one_thread")

DEPTH = 3  # stem, layer1 and layer2 frozen
NO_AMP = torch.autocast("cpu", enabled=False)


def _prefix(model: nn.Module, cache: FeatureCache | None) -> FrozenPrefix | None:
    return (
        None if cache is None else FrozenPrefix(model, "resnet18", cache, "toy", 16, NO_AMP, False)
    )


@contextmanager
def _frozen_stage_calls(model: nn.Module) -> Iterator[list[int]]:
    """How often the last frozen stage runs in the block: never where cached features serve."""
    calls: list[int] = []
    handle = model.layer2.register_forward_hook(lambda *_: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


def _one_epoch(
    data: PreparedData, augment: str, cache: FeatureCache | None
) -> tuple[float, nn.Module, int]:
    """(mean loss, trained model, frozen-stage calls during the steps) of one epoch."""
    model = _model()
    set_frozen(model, DEPTH)
    set_train_mode(model, DEPTH)
    optimizer = make_optimizer(model, PARAMS, DEPTH)
    generator = torch.Generator().manual_seed(1)
    frozen = _prefix(model, cache)
    images = ResidentImages(data.train_images)
    source = BatchSource(
        images, data.train_labels, augment, generator, frozen, 0, PARAMS.batch_size
    )
    batches = source.epoch(model, 0, DEPTH, epochs_left=2)
    with _frozen_stage_calls(model) as calls:
        loss = train_one_epoch(
            model, batches, nn.CrossEntropyLoss(), optimizer, NO_AMP, epoch=0, grad_clip=None
        )
    return loss, model, len(calls)


@pytest.mark.parametrize("augment", ["none", "flip"])
def test_an_epoch_on_cached_features_equals_the_epoch_on_images(
    toy: PreparedData, augment: str
) -> None:
    plain_loss, plain, plain_calls = _one_epoch(toy, augment, None)
    cache = FeatureCache()
    cached_loss, cached, cached_calls = _one_epoch(toy, augment, cache)
    assert plain_calls == len(toy.train_images) // PARAMS.batch_size  # once a step
    assert cached_calls == 0 and len(cache) == (1 if augment == "none" else 2)
    assert cached_loss == pytest.approx(plain_loss, rel=1e-4, abs=1e-5)
    cached_state = cached.state_dict()
    for name, tensor in plain.state_dict().items():
        assert torch.allclose(tensor.float(), cached_state[name].float(), atol=1e-4), name


def test_augmentation_that_moves_pixels_runs_the_frozen_stages_every_step(
    toy: PreparedData,
) -> None:
    cache = FeatureCache()
    _, _, calls = _one_epoch(toy, "crop_flip", cache)
    assert calls == len(toy.train_images) // PARAMS.batch_size and len(cache) == 0


def test_validate_on_cached_features_equals_validate_on_images(toy: PreparedData) -> None:
    model = _model()
    set_frozen(model, DEPTH)
    images, labels = ResidentImages(toy.val_images), toy.val_labels
    with _frozen_stage_calls(model) as calls:
        plain = validate(model, images, labels, DEPTH, None, 16)
    assert len(calls) == 2  # 32 images in batches of 16
    cache = FeatureCache()
    prefix = _prefix(model, cache)
    first = validate(model, images, labels, DEPTH, prefix, 16)  # builds the val features
    with _frozen_stage_calls(model) as calls:
        again = validate(model, images, labels, DEPTH, prefix, 16)
    assert calls == [] and cache.hits == 1
    assert plain[0] == first[0] == again[0]
    assert torch.equal(plain[1], first[1]) and torch.equal(first[1], again[1])
    # nothing frozen, nothing to cache: the images path, as evaluate takes it
    with _frozen_stage_calls(model) as calls:
        unfrozen = validate(model, images, labels, 0, prefix, 16)
    assert len(calls) == 2 and len(cache) == 1
    expected = evaluate(model, toy.val_images, labels, CPU, 16)
    assert unfrozen[0] == expected[0] and torch.equal(unfrozen[1], expected[1])
