"""Greedy model soups: averaging, BatchNorm re-estimation, and a real study's soup exported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from tests.conftest import single_thread, tiny_context
from tuner.config import ResolvedWeights
from tuner.data import normalize, prepare_data
from tuner.engine import build_model
from tuner.errors import TunerError
from tuner.results.checkpoints import read_checkpoint
from tuner.results.export import ExportRequest, describe, export_trial, load_model
from tuner.results.report import write_report
from tuner.results.soup import average_states, bn_layers_that_differ, recompute_bn_stats
from tuner.run.workers import run_worker
from tuner.search import attrs
from tuner.search import study as study_mod

KEEP = 3


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, tiny_data):
    """Four tiny trials, the top three keeping their checkpoints (none of the tests changes it)."""
    pinned, context = tiny_context(
        tmp_path_factory.mktemp("soup"),
        tiny_data,
        f"search.keep_checkpoints={KEEP}",
        "search.pruner=none",
        "search.trials=4",
    )
    with single_thread():
        run_worker(pinned.study, context)
    return pinned, context


def _small_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def test_averaging_two_state_dicts_gives_their_mean() -> None:
    first, second = _small_net(0), _small_net(1)
    first[1].running_mean.fill_(1.0)
    first[1].num_batches_tracked.fill_(7)
    second[1].num_batches_tracked.fill_(9)
    a, b = first.state_dict(), second.state_dict()
    averaged = average_states([a, b])
    assert averaged.keys() == a.keys()
    for name in ("0.weight", "0.bias", "1.weight", "1.running_mean", "1.running_var"):
        torch.testing.assert_close(averaged[name], (a[name] + b[name]) / 2, rtol=0, atol=1e-7)
    assert averaged["1.num_batches_tracked"].dtype == torch.long
    assert averaged["1.num_batches_tracked"].item() == 7  # a counter is taken from the first
    assert bn_layers_that_differ([a, b]) == ("1",) and bn_layers_that_differ([a, dict(a)]) == ()
    _small_net(2).load_state_dict(averaged)  # a state the network takes


def test_recomputed_bn_statistics_are_those_of_the_training_images() -> None:
    model = nn.Sequential(nn.BatchNorm2d(3)).eval()  # straight on the images
    images = torch.randint(0, 256, (9, 3, 5, 5), dtype=torch.uint8)
    recompute_bn_stats(model, images, batch_size=8, device=torch.device("cpu"), layers=["0"])
    seen = normalize(images[:8])  # one batch of 8; the lone ninth image is left out
    norm = model[0]
    torch.testing.assert_close(norm.running_mean, seen.mean((0, 2, 3)))
    torch.testing.assert_close(norm.running_var, seen.var((0, 2, 3)))  # unbiased, as in training
    assert norm.momentum == 0.1 and not model.training  # put back as they were


def test_only_the_named_bn_layers_are_re_estimated_the_rest_run_as_stored() -> None:
    """A stage every ingredient kept frozen keeps its statistics, and normalises with them
    while the layers after it are re-estimated, as it will at inference."""
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).eval()
    model[0].running_mean.fill_(2.0)
    kept = {name: tensor.clone() for name, tensor in model[0].state_dict().items()}
    images = torch.randint(0, 256, (8, 3, 5, 5), dtype=torch.uint8)
    recompute_bn_stats(model, images, batch_size=4, device=torch.device("cpu"), layers=["2"])
    assert all(torch.equal(model[0].state_dict()[name], kept[name]) for name in kept)
    with torch.no_grad():
        features = model[1](model[0](normalize(images)))
    torch.testing.assert_close(model[2].running_mean, features.mean((0, 2, 3)))


def test_a_soup_of_one_is_the_best_trial_itself(searched, tmp_path: Path, tiny_data) -> None:
    pinned, context = searched
    result = export_trial(pinned, context.store, ExportRequest(tmp_path / "one", soup=1))
    export_trial(pinned, context.store, ExportRequest(tmp_path / "plain"))
    best = study_mod.ranked_trials(pinned.study)[0]
    checkpoint = read_checkpoint(pinned.study, context.store, best, KEEP)
    exported = load_file(str(tmp_path / "one" / "model.safetensors"))
    assert exported.keys() == checkpoint.keys()
    assert all(torch.equal(exported[name], checkpoint[name]) for name in checkpoint)
    images = normalize(tiny_data.val_images)
    with torch.no_grad():
        souped, plain = (load_model(tmp_path / f).model(images) for f in ("one", "plain"))
    assert torch.equal(souped, plain)
    soup = json.loads((tmp_path / "one" / "config.json").read_text())["soup"]
    assert soup["ingredients"] == [{"trial": best.number, "val_accuracy": best.value}]
    assert soup["rejected"] == [] and soup["bn_recomputed"] is False and soup["bn_layers"] == []
    assert result.trial_number == best.number
    assert soup["test"]["soup_vs_best_single"]["p_value"] == 1.0  # the same predictions


def test_a_greedy_soup_of_a_real_study(searched, tmp_path: Path) -> None:
    pinned, context = searched
    lines: list[str] = []
    folder = tmp_path / "soup"
    result = export_trial(pinned, context.store, ExportRequest(folder, soup=3), say=lines.append)
    top = study_mod.ranked_trials(pinned.study)[:KEEP]
    config = json.loads((folder / "config.json").read_text())
    soup = config["soup"]
    kept = [item["trial"] for item in soup["ingredients"]]
    assert [step["trial"] for step in soup["tried"]] == [trial.number for trial in top]
    assert kept[0] == top[0].number and set(kept) <= {trial.number for trial in top}
    assert sorted(kept + soup["rejected"]) == sorted(trial.number for trial in top)
    current = soup["tried"][0]["soup_val_accuracy"]
    for step in soup["tried"][1:]:  # kept exactly when the soup's val accuracy did not drop
        assert step["kept"] == (step["soup_val_accuracy"] >= current)
        current = step["soup_val_accuracy"] if step["kept"] else current
    assert [line[: len("soup: + trial #")] for line in lines] == ["soup: + trial #"] * (KEEP - 1)
    assert soup["val"]["soup"] == current == pytest.approx(result.verified_accuracy)
    assert soup["val"]["best_single"] == pytest.approx(top[0].value)
    test = soup["test"]
    assert test["soup"]["correct"] == config["test"]["correct"]
    assert test["soup"]["images"] == test["best_single"]["images"] == config["data"]["test_images"]
    assert 0 < test["soup_vs_best_single"]["p_value"] <= 1
    assert json.loads((folder / "metrics.json").read_text())["soup"] == soup
    assert pinned.study.user_attrs["tuner:soup"] == soup
    assert pinned.study.user_attrs[f"tuner:test:{top[0].number}"]["test"] == {
        "split": config["test"]["split"],
        **test["best_single"],
    }

    # The folder predicts as the soup rebuilt from its own record and the checkpoints.
    data = prepare_data(pinned.config.data, with_test=True)
    by_number = {trial.number: trial for trial in top}
    states = [read_checkpoint(pinned.study, context.store, by_number[n], KEEP) for n in kept]
    rebuilt = build_model(config["arch"], len(data.class_names), ResolvedWeights.random_init())
    rebuilt.load_state_dict(average_states(states))
    if soup["bn_recomputed"]:
        batch, layers = pinned.config.train.eval_batch_size, soup["bn_layers"]
        recompute_bn_stats(rebuilt, data.train_images, batch, torch.device("cpu"), layers)
    images = normalize(data.test_images)
    with torch.no_grad():
        expected = rebuilt.eval()(images)
        torch.testing.assert_close(load_model(folder).model(images), expected)
    assert (expected.argmax(1) == data.test_labels).sum().item() == test["soup"]["correct"]

    printed = describe(result)
    assert f"soup of trials {', '.join(f'#{n}' for n in kept)}" in printed
    assert f"best single trial #{top[0].number}" in printed and "exact McNemar" in printed
    card = (folder / "MODEL_CARD.md").read_text()
    assert "greedy soup" in card and f"The best single trial, #{top[0].number}" in card

    page = write_report(pinned, tmp_path / "report").html.read_text()
    soup_test, single_test = test["soup"], test["best_single"]
    assert (
        f"Greedy soup (export-best --soup 3) of trials {', '.join(f'#{n}' for n in kept)} "
        f"({len(soup['rejected'])} rejected): val {current:.4f}; held-out test "
        f"{soup_test['accuracy']:.4f} ({soup_test['correct']} of {soup_test['images']}; 95% CI"
    ) in page
    assert f"best single trial #{top[0].number}&#x27;s {single_test['accuracy']:.4f}" in page


def test_trials_share_one_start_and_a_soup_takes_only_trials_from_it(
    tmp_path: Path, tiny_data
) -> None:
    """Every trial draws its model from the study's seed (a random-init backbone included), so
    their weights can be averaged; a trial drawn from another seed never joins the soup."""
    pinned, context = tiny_context(
        tmp_path, tiny_data, "search.keep_checkpoints=3", "search.pruner=none", "search.trials=3"
    )
    pinned.study.enqueue_trial({}, user_attrs={attrs.INIT_SEED: 123})
    with single_thread():
        run_worker(pinned.study, context)
    trials = pinned.study.get_trials()
    odd = [t for t in trials if t.user_attrs[attrs.INIT_SEED] == 123]
    shared = [t for t in trials if t not in odd]
    assert len(odd) == 1 and len(shared) == 2
    assert {t.user_attrs[attrs.INIT_SEED] for t in shared} == {pinned.config.train.seed}
    assert len({t.user_attrs[attrs.SEED] for t in trials}) == 3  # each trains its own way

    lines: list[str] = []
    best = study_mod.ranked_trials(pinned.study)[0]
    request = ExportRequest(tmp_path / "soup", soup=3)
    export_trial(pinned, context.store, request, say=lines.append)
    soup = json.loads((tmp_path / "soup" / "config.json").read_text())["soup"]
    tried = {step["trial"] for step in soup["tried"]}
    expected = {t.number for t in (odd if best in odd else shared)}
    assert tried == expected
    assert any("not 3: souping those" in line for line in lines)


def test_a_soup_larger_than_the_kept_checkpoints_is_refused(searched, tmp_path: Path) -> None:
    pinned, context = searched
    with pytest.raises(TunerError, match=r"search.keep_checkpoints is 3.*--soup 3 or less"):
        export_trial(pinned, context.store, ExportRequest(tmp_path / "x", soup=4))
    assert not (tmp_path / "x").exists()
