"""Frozen stages cost nothing they need not: their outputs, computed once and reused.

While the first ``depth`` backbone stages are frozen they are a fixed function of their
input (no gradient, BatchNorm in eval mode, see :func:`tuner.engine.model.set_train_mode`).
When that input is fixed too (the validation images always; the training images without
augmentation, or with flips, which pick one of two fixed inputs per image), their outputs are
computed once per split and reused for every epoch of the trial and by every later trial of
the same worker that starts from the same weights. A feature-extraction trial (everything
frozen) then trains only the head on cached pooled features.

A cache entry is keyed by a SHA-256 of the frozen stages' tensors, the depth, the data
fingerprint (images, labels, size and split), which split, the device and the precision, so
a different start, depth, image size or split never hits.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tuner.config import TrainConfig
from tuner.data import flip_draw, normalize
from tuner.engine.model import stage_modules
from tuner.engine.transfer import ImageSource
from tuner.recipe import STAGES


def forward_prefix(model: nn.Module, x: Tensor, depth: int) -> Tensor:
    """The output of stages [0, depth) of a torchvision ResNet; pooled [N, C] at depth 5.

    The stem includes its ReLU and max-pool (parameter-free), and depth 5 includes the
    average pool, so the head alone remains: caching at depth 5 stores one vector per image.
    """
    if depth >= 1:
        x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    for name in STAGES[1:depth]:
        x = getattr(model, name)(x)
    if depth == len(STAGES):
        x = torch.flatten(model.avgpool(x), 1)
    return x


def forward_suffix(model: nn.Module, features: Tensor, depth: int) -> Tensor:
    """Logits from :func:`forward_prefix`'s output: stages [depth, 5), pooling and the head."""
    x = features
    if depth == 0:
        x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    for name in STAGES[max(depth, 1) :]:
        x = getattr(model, name)(x)
    if depth < len(STAGES):
        x = torch.flatten(model.avgpool(x), 1)
    return model.fc(x)


@dataclass(frozen=True)
class FeatureKey:
    """Everything the cached outputs depend on; two keys are equal only for equal outputs."""

    arch: str  # the ResNet: a study that searches several keeps each one's entries
    start_sha256: str  # of the stem: which starting weights (see FeatureCache.keep_start)
    prefix_sha256: str  # of the frozen stages' parameters and buffers
    depth: int
    data_fingerprint: str  # PreparedData.fingerprint: images, labels, size, split
    split: str  # "train", "train-flipped" or "val"
    device: str
    autocast: bool


class FeatureCache:
    """A worker's store of frozen-prefix outputs, bounded in bytes, least recently used out.

    It lives in the worker's SearchContext, so trials of one worker share it; tensors stay on
    the device they were computed on. ``max_bytes`` 0 turns caching off.
    """

    def __init__(self, max_bytes: int = TrainConfig.feature_cache_mb << 20) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[FeatureKey, Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def bytes(self) -> int:
        return sum(_nbytes(t) for t in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: FeatureKey) -> Tensor | None:
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return found

    def fits(self, nbytes: int) -> bool:
        return nbytes <= self.max_bytes

    def put(self, key: FeatureKey, features: Tensor) -> None:
        """Keep ``features`` under ``key``, evicting the least recently used to make room."""
        if not self.fits(_nbytes(features)):
            return
        self._entries[key] = features
        self._entries.move_to_end(key)
        while self.bytes > self.max_bytes:
            self._entries.popitem(last=False)

    def keep_start(self, arch: str, start_sha256: str) -> None:
        """Drop the entries of ``arch`` computed from other starting weights: no later trial
        can hit them. Other archs' entries stay, for the trials that alternate between archs.

        With pretrained weights every trial of a study starts alike and entries live on; with
        random init each trial starts afresh, and this keeps its dead entries from piling up.
        """
        stale = [k for k in self._entries if k.arch == arch and k.start_sha256 != start_sha256]
        for key in stale:
            del self._entries[key]


class FrozenPrefix:
    """One training run's view of the cache: the features of a split at a frozen depth.

    The prefix digest is computed once per depth: frozen stages never change while frozen
    (they are not in the optimizer), and depth only ever decreases during a run.
    """

    def __init__(
        self,
        model: nn.Module,
        arch: str,
        cache: FeatureCache,
        data_fingerprint: str,
        batch_size: int,
        autocast: torch.autocast,
        amp: bool,
    ) -> None:
        self._model = model
        self._arch = arch
        self._cache = cache
        self._fingerprint = data_fingerprint
        self._batch_size = batch_size
        self._autocast = autocast
        self._amp = amp  # whether ``autocast`` is enabled
        self._digests: dict[int, str] = {}
        cache.keep_start(arch, self._digest(1))

    def features(
        self,
        split: str,
        images: ImageSource,
        depth: int,
        *,
        amp: bool,
        prepare: Callable[[Tensor], Tensor],
        build: bool = True,
    ) -> Tensor | None:
        """The prefix output of every image of ``split``, cached; None when it cannot fit.

        ``prepare`` turns a uint8 batch into the model's float input (normalise, maybe flip);
        ``amp`` says whether the prefix runs under the training autocast (train splits) or in
        float32 (validation, as :func:`tuner.engine.evaluate.evaluate`). With ``build`` False
        only a cached result is returned (None on a miss): for when computing it would not pay
        off. The outputs live on the compute device, however the images arrive.
        """
        key = FeatureKey(
            self._arch,
            self._digest(1),
            self._digest(depth),
            depth,
            self._fingerprint,
            split,
            str(images.device),
            amp and self._amp,
        )
        found = self._cache.get(key)
        if found is not None or not build:
            return found
        chunks = images.chunks(self._batch_size)
        first = self._compute(prepare(next(chunks)), depth, amp)
        if not self._cache.fits(_nbytes(first) // len(first) * len(images)):
            chunks.close()
            return None
        features = torch.cat([first, *(self._compute(prepare(c), depth, amp) for c in chunks)])
        self._cache.put(key, features)
        return features

    @torch.no_grad()
    def _compute(self, x: Tensor, depth: int, amp: bool) -> Tensor:
        for stage in stage_modules(self._model)[:depth]:
            stage.eval()  # frozen stages always run in eval mode (BatchNorm stats fixed)
        if amp and self._amp:
            with self._autocast:
                return forward_prefix(self._model, x, depth)
        return forward_prefix(self._model, x, depth)

    def _digest(self, depth: int) -> str:
        if depth not in self._digests:
            digest = hashlib.sha256()
            for index, stage in enumerate(stage_modules(self._model)[:depth]):
                for name, tensor in stage.state_dict().items():
                    digest.update(f"{index}.{name}{tensor.dtype}{tuple(tensor.shape)}".encode())
                    flat = tensor.detach().cpu().contiguous().reshape(-1)
                    digest.update(flat.view(torch.uint8).numpy())
            self._digests[depth] = digest.hexdigest()
        return self._digests[depth]


def train_features(
    frozen: FrozenPrefix | None, images: ImageSource, depth: int, augment: str, epochs_left: int
) -> tuple[Tensor, Tensor | None] | None:
    """The frozen prefix's outputs for the training split: (plain, mirrored) or None.

    Only where the prefix's input is one of a few fixed images: no augmentation, or flips
    (mirrored is then the output for every image flipped). None means run it every step.
    Both orientations cost two forward passes per image where one epoch needs one, so with
    flips they are computed only when the run stays at this depth for ``epochs_left`` >= 2
    epochs (else only an earlier trial's cached ones are used).
    """
    if frozen is None or depth == 0 or augment not in ("none", "flip"):
        return None
    build = augment == "none" or epochs_left >= 2
    plain = frozen.features("train", images, depth, amp=True, prepare=normalize, build=build)
    if augment == "none" or plain is None:
        return None if plain is None else (plain, None)
    mirrored = frozen.features(
        "train-flipped",
        images,
        depth,
        amp=True,
        prepare=lambda batch: normalize(batch.flip(-1)),
        build=build,
    )
    return None if mirrored is None else (plain, mirrored)


def pick_features(
    cached: tuple[Tensor, Tensor | None], batch: Tensor, generator: torch.Generator
) -> Tensor:
    """A batch of cached features; with mirrored ones, flipped as ``augment_batch`` flips."""
    plain, mirrored = cached
    if mirrored is None:
        return plain[batch]
    flip = flip_draw(len(batch), generator, batch.device)
    return torch.where(flip.view(-1, *[1] * (plain.ndim - 1)), mirrored[batch], plain[batch])


def forward_frozen(model: nn.Module, x: Tensor, depth: int) -> Tensor:
    """Logits with the frozen prefix run under no_grad: it keeps no activations for backward."""
    if depth == 0:
        return model(x)
    with torch.no_grad():
        features = forward_prefix(model, x, depth)
    return forward_suffix(model, features, depth)


def _nbytes(tensor: Tensor) -> int:
    return tensor.numel() * tensor.element_size()
