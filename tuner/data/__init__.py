"""The data layer: sources, decoding, the per-host prepared cache, on-device augmentation.

torch, never optuna. Other layers use the names below; the modules hold the rest.
"""

from tuner.data.augment import augment_batch, flip_draw, normalize
from tuner.data.cache import cache_path, entry_path
from tuner.data.decode import host_cores
from tuner.data.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    fit_square,
    load_image_file,
    pil_to_tensor,
)
from tuner.data.mixing import Mixing, mix_batch
from tuner.data.prepare import PreparedData, ProgressCallback, prepare_data, with_val_in_training
from tuner.data.sources import IMAGE_EXTENSIONS, find_images

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "Mixing",
    "PreparedData",
    "ProgressCallback",
    "augment_batch",
    "cache_path",
    "entry_path",
    "find_images",
    "fit_square",
    "flip_draw",
    "host_cores",
    "load_image_file",
    "mix_batch",
    "normalize",
    "pil_to_tensor",
    "prepare_data",
    "with_val_in_training",
]
