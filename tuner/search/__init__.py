"""The deciding side: what to try. Sampling the space, pruners, the pinned study, storage and
the artifact store, warm starts, confirm's plans and verdicts, trial notes, the names of every
attribute tuner writes, and the one adapter to Optuna's private API.

Trials are run by :mod:`tuner.run`, which imports this package and never the reverse. The
names below import neither torch nor the engine, so commands that only read a study
(``tuner status``, ``tuner report``) start quickly.
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
