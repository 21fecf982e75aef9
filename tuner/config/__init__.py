"""StudyConfig: the typed, validated form of a study YAML file.

Everything past this package sees frozen dataclasses, never loose dicts. A config is
loaded from YAML, patched with ``--set key.path=value`` overrides, validated (every
error names the file and the key), and serialised into the study so that any worker
can rebuild exactly the same run. One module per job: the rules each key declares, the
sections, loading, serialising, and the weights pinned beside it; the space's dimension types
(``tuner.dimensions``) and their table (``recipe.DIMENSIONS``) sit below it, in the base.
"""

from tuner.config.load import from_dict, from_stored, load_config
from tuner.config.pinned import PinnedWeights, ResolvedWeights
from tuner.config.sections import (
    AMP_MODES,
    AUGMENTATIONS,
    DATA_ON_DEVICE,
    LR_SCHEDULES,
    PRUNERS,
    SAMPLERS,
    TEST_SOURCES,
    DataConfig,
    ModelConfig,
    SearchConfig,
    SpaceConfig,
    StudyConfig,
    TrainConfig,
)
from tuner.config.serialise import identity_differences, to_dict, to_yaml
from tuner.config.sources import DATA_SOURCES, LOADERS, TEST_SPLITS, SourceInfo
from tuner.dimensions import (
    Choice,
    Dimension,
    Fixed,
    FloatRange,
    IntRange,
    dimension_values,
)
from tuner.recipe import ARCHS

__all__ = [
    "AMP_MODES",
    "ARCHS",
    "AUGMENTATIONS",
    "DATA_ON_DEVICE",
    "DATA_SOURCES",
    "LOADERS",
    "LR_SCHEDULES",
    "PRUNERS",
    "SAMPLERS",
    "TEST_SOURCES",
    "TEST_SPLITS",
    "Choice",
    "DataConfig",
    "Dimension",
    "Fixed",
    "FloatRange",
    "IntRange",
    "ModelConfig",
    "PinnedWeights",
    "ResolvedWeights",
    "SearchConfig",
    "SourceInfo",
    "SpaceConfig",
    "StudyConfig",
    "TrainConfig",
    "dimension_values",
    "from_dict",
    "from_stored",
    "identity_differences",
    "load_config",
    "to_dict",
    "to_yaml",
]
