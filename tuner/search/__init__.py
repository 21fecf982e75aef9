"""The search layer: everything Optuna. Sampling, the objective, the pinned study, storage,
workers and the launcher, confirm, trial notes, and the names of every attribute tuner writes.

The names below import neither torch nor the engine, so commands that only read a study
(``tuner status``, ``tuner report``) start quickly; the objective, workers and driver are
imported from their modules by the commands that train.
"""

from tuner.search.storage import (
    ArtifactStore,
    artifact_store,
    artifacts_uri,
    open_storage,
    redact,
    storage_url,
)
from tuner.search.study import PinnedStudy, load_pinned, only_study, ranked_trials

__all__ = [
    "ArtifactStore",
    "PinnedStudy",
    "artifact_store",
    "artifacts_uri",
    "load_pinned",
    "only_study",
    "open_storage",
    "ranked_trials",
    "redact",
    "storage_url",
]
