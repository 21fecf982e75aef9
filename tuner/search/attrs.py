"""The name of every study and trial attribute tuner writes, in one place.

optuna-dashboard, ``tuner status``, reports, exports and other hosts' workers read these
back, so a name is part of the stored format: rename one only with a migration. Study
attributes are prefixed ``tuner:``; trial attributes keep the short names the dashboard shows.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial

from tuner.config import Fixed, SpaceConfig
from tuner.recipe import TrialParams
from tuner.stats import pack_correct, unpack_correct

# --- on the study ------------------------------------------------------------------------
CONFIG = "tuner:config"  # the full resolved StudyConfig, as plain data
WEIGHTS = "tuner:weights"  # PinnedWeights.to_dict(): arch -> ResolvedWeights.to_dict()
FINGERPRINT = "tuner:data_fingerprint"  # PreparedData.fingerprint
CHECKPOINT_REMOVED_PREFIX = "tuner:checkpoint_removed:"  # + trial number: its checkpoint evicted
PARENT_STUDY = "tuner:parent_study"  # on a confirm study: the study it confirms
CONFIRM_REQUEST = "tuner:confirm_request"  # the last `tuner confirm` request: candidates, seeds
TEST_EVALUATION_PREFIX = "tuner:test:"  # + trial number: its export's held-out test result
SOUP = "tuner:soup"  # the last `export-best --soup`: ingredients, val and test beside the best
QUEUE = "tuner:queue"  # on a queued study: {priority, state, queued_at, reason} (search/queue.py)
REFUSED_PREFIX = "tuner:refused:"  # + host: why that host's pool cannot load the study
DEADLINE = "tuner:deadline"  # `tuner search --minutes`: when its run ends (search/deadline.py)

OBJECTIVE = "val_accuracy"  # the objective's name (set_metric_names): the dashboard's label

# --- on a trial: what it is --------------------------------------------------------------
PARAMS = "params"  # the full TrialParams as a dict, fixed dimensions included
RECIPE = "recipe"  # the classic recipe's name, on the trials enqueued for them
WARM_START = "warm_start"  # "pets#12": the earlier study's trial whose recipe it replays
ORIGIN = "origin_trial"  # the first trial of a chain of retries: fixes the seed
SEED = "seed"  # the training seed; set before the trial starts to choose it (tuner confirm)
INIT_SEED = "init_seed"  # the seed its model (new head, random-init backbone) was drawn from
WORKER = "worker"  # {host, worker, pid, device} of the process that ran it
CONFIRMS = "confirms"  # on a confirm run: the parent trial it re-trains
SEED_INDEX = "seed_index"  # on a confirm run: which of the fresh seeds

# --- on a trial: per-epoch curves ---------------------------------------------------------
VAL_ACCURACY = "val_accuracy"
TRAIN_LOSS = "train_loss"
EPOCH_SECONDS = "epoch_seconds"
FROZEN_DEPTH = "frozen_depth"
CURVES = (VAL_ACCURACY, TRAIN_LOSS, EPOCH_SECONDS, FROZEN_DEPTH)

# --- on a trial: how it went ----------------------------------------------------------------
BEST_EPOCH = "best_epoch"
VAL_CORRECT = "val_correct"  # {images, bits}: which val images the best epoch got right
STOPPED = "stopped"  # why a trial was pruned (the pruner, a non-finite loss)
FAIL_REASON = "fail_reason"  # Optuna 5 keeps none: the exception, for status and the summary
CHECKPOINT = "checkpoint_artifact"  # the artifact id of its best-epoch weights
RESUME = "resume"  # {artifact, epoch}: the last epoch checkpoint, for a retry to resume from
RESUMED_AFTER_EPOCH = "resumed_after_epoch"
RESUME_FAILED = "resume_failed"  # why a retry could not read its resume checkpoint


def recipe_params(trial: FrozenTrial) -> dict[str, Any]:
    """A trial's full recipe as stored (fixed dimensions included), else its Optuna params.

    Trials that failed before their recipe was recorded have only the Optuna params.
    """
    return trial.user_attrs.get(PARAMS) or trial.params


def init_seed(user_attrs: dict[str, Any], study_seed: int) -> int:
    """The seed a trial's starting model is drawn from (see :data:`INIT_SEED`).

    New trials share the study's ``train.seed``, so every trial of a study starts from one
    model, as weight averaging (``export-best --soup``) assumes, and random-init trials share
    frozen features. A trial that recorded a training seed but no init seed (a retry of a trial
    from before init seeds were recorded, or a confirm run) drew its model from that seed.
    """
    if INIT_SEED in user_attrs:
        return int(user_attrs[INIT_SEED])
    return int(user_attrs.get(SEED, study_seed))


def train_seed(user_attrs: dict[str, Any], study_seed: int, number: int) -> int:
    """The seed trial ``number`` trains with (see :data:`SEED`), for whoever trains it again.

    The seed it recorded, else the study's ``train.seed`` plus its origin (:data:`ORIGIN`,
    the first trial of its chain of retries), so a retry trains as the trial it retries; a
    trial that recorded neither is its own origin. The objective chooses a trial's seed by it
    and refit reads it back, so a retried trial's refit trains with the seed its trial did.
    """
    if SEED in user_attrs:
        return int(user_attrs[SEED])
    return study_seed + int(user_attrs.get(ORIGIN, number))


def val_correct(trial: FrozenTrial) -> np.ndarray | None:
    """Which validation images the trial's best epoch got right, in order; None for a trial
    that recorded none (pruned, failed, or from before it was recorded)."""
    recorded = trial.user_attrs.get(VAL_CORRECT)
    return None if recorded is None else unpack_correct(recorded["bits"], recorded["images"])


def record_val_correct(correct: np.ndarray) -> dict[str, object]:
    """The :data:`VAL_CORRECT` attribute of a boolean vector over the validation images."""
    return {"images": len(correct), "bits": pack_correct(correct)}


def trial_params(trial: FrozenTrial, space: SpaceConfig) -> TrialParams | None:
    """The trial's recipe as a TrialParams; None for a trial that failed before recording it.

    A trial recorded before a dimension existed gets the value its study's ``space`` fixes it
    at (a moved ``model.arch``, say), else the dimension's "off" default.
    """
    recorded = trial.user_attrs.get(PARAMS)
    return params_from_record(recorded, space) if recorded else None


def params_from_record(recorded: dict[str, Any], space: SpaceConfig) -> TrialParams:
    """A stored recipe dict as TrialParams; missing dimensions filled as in :func:`trial_params`."""
    fixed = {
        f.name: getattr(space, f.name).value
        for f in dataclasses.fields(space)
        if isinstance(getattr(space, f.name), Fixed)
    }
    names = {f.name for f in dataclasses.fields(TrialParams)}
    missing = {k: v for k, v in fixed.items() if k in names and k not in recorded}
    return TrialParams(**{**missing, **recorded})
