"""transfer.py and placement.py: streamed batches equal resident ones; who decides, and how."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.engine.test_train import CFG, CPU, PARAMS, _model
from tuner.config import TrainConfig
from tuner.data.prepare import PreparedData
from tuner.engine.features import FeatureCache
from tuner.engine.placement import WORKERS_ON_DEVICE_ENV, choose_placement, free_bytes
from tuner.engine.train import TrainEnvironment, TrainHooks, train
from tuner.engine.transfer import DeviceCopies, ResidentImages, StreamedImages, image_source
from tuner.errors import TunerError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_streamed_batches_are_the_resident_ones_in_order() -> None:
    images = torch.randint(0, 256, (37, 3, 4, 4), dtype=torch.uint8)
    order = torch.randperm(37, generator=torch.Generator().manual_seed(3))
    spans = [(0, 16), (16, 32), (32, 37)]
    resident, streamed = ResidentImages(images), StreamedImages(images, CPU)
    pairs = zip(resident.gather(order, spans), streamed.gather(order, spans), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    chunks = zip(resident.chunks(10), streamed.chunks(10), strict=True)
    assert all(torch.equal(a, b) for a, b in chunks)
    assert torch.equal(torch.cat(list(streamed.chunks(10))), images)
    assert list(streamed.gather(order, [])) == []


def _train(data: PreparedData, *, resident: bool, freeze: int, augment: str):
    params = dataclasses.replace(PARAMS, freeze_depth=freeze, unfreeze_epoch=1 if freeze else None)
    cache = FeatureCache() if freeze else None
    env = TrainEnvironment(CPU, 4, augment, feature_cache=cache, resident=resident)
    return train(_model(), data, params, CFG, env, TrainHooks())


@pytest.mark.parametrize(("freeze", "augment"), [(0, "crop_flip_jitter"), (3, "flip")])
def test_streamed_and_resident_runs_train_identically(
    toy: PreparedData, freeze: int, augment: str
) -> None:
    resident = _train(toy, resident=True, freeze=freeze, augment=augment)
    streamed = _train(toy, resident=False, freeze=freeze, augment=augment)
    assert [m.train_loss for m in streamed.history] == [m.train_loss for m in resident.history]
    assert [m.val_accuracy for m in streamed.history] == [m.val_accuracy for m in resident.history]
    assert resident.best_state.keys() == streamed.best_state.keys()
    for name, tensor in resident.best_state.items():
        assert torch.equal(tensor, streamed.best_state[name]), name


def test_auto_keeps_data_that_fits_resident_and_streams_what_does_not(toy: PreparedData) -> None:
    roomy = choose_placement(toy, CPU, TrainConfig(data_on_device="auto"))
    tight = choose_placement(toy, CPU, TrainConfig(data_on_device_share=1e-12))
    never = choose_placement(toy, CPU, TrainConfig(data_on_device="never"))
    assert roomy.resident and roomy.mode == "resident" and "in place" in roomy.describe()
    assert not tight.resident and "streamed" in tight.describe() and ">" in tight.describe()
    assert not never.resident and never.allowed_bytes is None
    assert roomy.data_bytes == (96 * 3 * 16 * 16) == never.data_bytes
    assert 0 < roomy.allowed_bytes <= free_bytes(CPU)


def test_always_with_data_that_cannot_fit_is_a_one_line_error(toy: PreparedData) -> None:
    cfg = TrainConfig(data_on_device="always", data_on_device_share=1e-12)
    with pytest.raises(TunerError) as caught:
        choose_placement(toy, CPU, cfg)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("train.data_on_device: always, but the data (0.1 MB of images)")
    assert "train.data_on_device_share=1e-12" in message and "free on cpu" in message


def test_workers_sharing_a_gpu_divide_its_room_but_not_the_page_cache(
    toy: PreparedData, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(WORKERS_ON_DEVICE_ENV, "4")
    alone = choose_placement(toy, CPU, TrainConfig(), sharing=1)
    shared = choose_placement(toy, CPU, TrainConfig())
    # on the CPU the memory map is one copy for every worker: the same room for each
    assert abs(shared.allowed_bytes - alone.allowed_bytes) < 0.05 * alone.allowed_bytes


def test_device_copies_upload_each_split_once_per_worker() -> None:
    """A worker's trials share one device copy of each split (on "meta", a device whose
    ``.to`` always makes a new tensor, as a GPU's does)."""
    train, val = (
        torch.zeros(8, 3, 4, 4, dtype=torch.uint8),
        torch.ones(4, 3, 4, 4, dtype=torch.uint8),
    )
    copies, meta = DeviceCopies(), torch.device("meta")
    first = [image_source(x, meta, resident=True, copies=copies).images for x in (train, val)]
    again = [image_source(x, meta, resident=True, copies=copies).images for x in (train, val)]

    assert all(a is b for a, b in zip(first, again, strict=True))
    assert first[0] is not first[1] and first[0].device.type == "meta"
    assert image_source(train, meta, resident=True).images is not first[0]  # no cache: a new copy
    assert isinstance(image_source(train, meta, resident=False, copies=copies), StreamedImages)
