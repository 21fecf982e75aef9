"""Dashboard notes and per-trial figures, on a tiny real study."""

from __future__ import annotations

import io

import optuna
import pytest
import torch
from optuna.artifacts import get_all_artifact_meta
from optuna_dashboard import get_note
from PIL import Image

from tests.conftest import single_thread, tiny_context
from tuner.engine import EpochMetrics, confusion_matrix
from tuner.results import dashboard
from tuner.run.trial_figures import confusion_png, learning_curve_png
from tuner.run.workers import run_worker
from tuner.search import attrs
from tuner.search import study as study_mod
from tuner.search.optuna_internals import NoteHandle


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, tiny_data) -> study_mod.PinnedStudy:
    """4 complete trials of which only the best keeps its checkpoint (keep_checkpoints=1)."""
    folder = tmp_path_factory.mktemp("notes")
    pinned, context = tiny_context(
        folder, tiny_data, "search.trials=4", "search.pruner=none", "search.keep_checkpoints=1"
    )
    with single_thread():
        run_worker(pinned.study, context)
    return pinned


def _note_of(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    return get_note(NoteHandle.of(study, trial))


def test_every_trial_is_noted_when_it_ends(searched: study_mod.PinnedStudy) -> None:
    study = searched.study
    best = study_mod.ranked_trials(study)[0]
    for trial in study.trials:
        note = _note_of(study, trial)
        assert note.startswith(f"## Trial {trial.number}: complete, val accuracy")
        assert "**Schedule:**" in note and "**Ran on:**" in note
    assert f"tuner export-best --study unit --trial {best.number}" in _note_of(study, best)


def test_evicted_checkpoints_are_annotated(searched: study_mod.PinnedStudy) -> None:
    study = searched.study
    removed = [t for t in study.trials if study_mod.checkpoint_removed(study, t)]
    unkept = [t for t in study.trials if attrs.CHECKPOINT not in t.user_attrs]
    for trial in removed:
        assert "**Checkpoint: removed**" in _note_of(study, trial)
    for trial in unkept:
        assert "none kept" in _note_of(study, trial)
    assert len(removed) + len(unkept) == 3


def test_top_trials_carry_their_figures(searched: study_mod.PinnedStudy) -> None:
    study = searched.study
    best = study_mod.ranked_trials(study)[0]
    names = {meta.filename for meta in get_all_artifact_meta(best, storage=study._storage)}
    assert f"learning-curve-trial-{best.number}.png" in names
    assert f"confusion-matrix-trial-{best.number}.png" in names


def test_backfill_writes_only_what_is_missing_or_stale(searched: study_mod.PinnedStudy) -> None:
    studies, written = dashboard.backfill_notes(searched.study._storage)
    assert (studies, written) == (1, 1)  # only the study note was missing
    assert "```yaml" in get_note(searched.study)
    assert dashboard.backfill_notes(searched.study._storage) == (1, 0)


def test_figures_are_real_pngs() -> None:
    history = [EpochMetrics(e, 1.0 / (e + 1), 0.5 + 0.1 * e, 1.0, 2 if e == 0 else 0, 1e-3)
               for e in range(4)]  # fmt: skip
    matrix = confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 3)
    assert matrix.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    for png in (learning_curve_png(history, "curve"), confusion_png(matrix, "abc", "confusion")):
        with Image.open(io.BytesIO(png)) as image:
            assert image.format == "PNG" and image.width > 300


@pytest.mark.parametrize(
    ("host", "warns"), [("127.0.0.1", False), ("localhost", False), ("::1", False),
                        ("0.0.0.0", True), ("10.1.2.3", True), ("myhost", True)]
)  # fmt: skip
def test_only_loopback_binds_go_without_a_warning(host: str, warns: bool) -> None:
    assert (dashboard.exposure_warning(host, 8080) is not None) == warns
