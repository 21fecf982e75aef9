"""``space.arch``: the ResNet itself searched, its weights pinned per arch, its cost recorded."""

from __future__ import annotations

import optuna
import pytest
import torch
from safetensors.torch import load

from tuner.config import ResolvedWeights
from tuner.data import normalize
from tuner.engine import build_model, resolve_study_weights
from tuner.engine.features import FeatureCache, FrozenPrefix
from tuner.engine.transfer import image_source
from tuner.errors import TunerError
from tuner.run.objective import make_objective
from tuner.search import attrs
from tuner.search import study as study_mod

pytestmark = pytest.mark.usefixtures("one_thread")
RANDOM = ResolvedWeights.random_init()


def test_trials_train_the_arch_they_sampled_and_record_its_cost(make_context) -> None:
    pinned, context = make_context(
        "space.arch={choices: [resnet18, resnet34]}", "search.sampler=random", "search.seed=3",
        "search.pruner=none", "search.keep_checkpoints=6",
    )  # fmt: skip
    assert pinned.weights.archs == ("resnet18", "resnet34")
    again = study_mod.load_pinned(pinned.study._storage, pinned.study.study_name)
    assert again.weights == pinned.weights
    pinned.study.optimize(make_objective(context), n_trials=6)
    trials = pinned.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    archs = {t.number: attrs.trial_params(t, pinned.config.space).arch for t in trials}
    assert set(archs.values()) == {"resnet18", "resnet34"}
    assert all(t.params["arch"] == archs[t.number] for t in trials)
    assert all(len(t.user_attrs[attrs.EPOCH_SECONDS]) == 2 for t in trials)
    for trial in trials:  # the checkpoint is the sampled arch's: it loads into no other
        with context.store.open_reader(trial.user_attrs[attrs.CHECKPOINT]) as reader:
            state = load(reader.read())
        other = "resnet34" if archs[trial.number] == "resnet18" else "resnet18"
        build_model(archs[trial.number], 10, RANDOM).load_state_dict(state)
        with pytest.raises(RuntimeError):
            build_model(other, 10, RANDOM).load_state_dict(state)


def test_a_weights_file_fits_one_arch_only(tmp_path) -> None:
    path = tmp_path / "r18.pt"
    torch.save(build_model("resnet18", 10, RANDOM).state_dict(), path)
    with pytest.raises(TunerError, match=r"model\.weights: the file .* fits one architecture"):
        resolve_study_weights(("resnet18", "resnet34"), str(path))
    assert resolve_study_weights(("resnet18",), str(path)).archs == ("resnet18",)


def test_the_feature_cache_keeps_each_archs_entries() -> None:
    cache = FeatureCache()
    images = torch.randint(0, 255, (4, 3, 16, 16), dtype=torch.uint8)
    no_amp = torch.autocast("cpu", enabled=False)
    source = image_source(images, torch.device("cpu"), resident=True)
    for arch in ("resnet18", "resnet34", "resnet18"):
        torch.manual_seed(0)
        model = build_model(arch, 2, RANDOM).eval()
        prefix = FrozenPrefix(model, arch, cache, "fp", 4, no_amp, False)
        prefix.features("val", source, 5, amp=False, prepare=normalize)
    assert sorted(key.arch for key in cache._entries) == ["resnet18", "resnet34"]
    assert cache.hits == 1  # the second resnet18 trial found its entry
