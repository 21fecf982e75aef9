"""A trial's best-epoch weights from the artifact store: the one an export ships, a soup's
ingredients.

Only the top ``search.keep_checkpoints`` complete trials keep theirs (the search evicts the
rest), so whether a trial still has one is a question about the study, not only the trial.
"""

from __future__ import annotations

import optuna
import torch
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial
from safetensors.torch import load as load_safetensors

from tuner.errors import TunerError
from tuner.search import attrs
from tuner.search import study as study_mod
from tuner.search.storage import ArtifactStore


def read_checkpoint(
    study: optuna.Study, store: ArtifactStore, trial: FrozenTrial, keep: int
) -> dict[str, torch.Tensor]:
    """The trial's best-epoch state dict; ``keep`` is the study's ``search.keep_checkpoints``."""
    if not study_mod.has_checkpoint(study, trial):
        raise TunerError(
            f"trial #{trial.number} has no checkpoint any more: only the top {keep} complete "
            "trials keep theirs (search.keep_checkpoints). Export one of those instead."
        )
    artifact_id = trial.user_attrs[attrs.CHECKPOINT]
    try:
        with store.open_reader(artifact_id) as reader:
            return load_safetensors(reader.read())
    except ArtifactNotFound:
        raise TunerError(
            f"trial #{trial.number}'s checkpoint {artifact_id} is not in the artifact store. "
            "Point --artifacts / TUNER_ARTIFACTS at the folder the search wrote to."
        ) from None
    except OSError as exc:
        raise TunerError(f"cannot read the artifact store: {exc}.") from None
