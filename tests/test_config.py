"""Study config: loading, overrides, validation errors that name the file and key."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from tuner.config import (
    Choice,
    Fixed,
    FloatRange,
    IntRange,
    PinnedWeights,
    ResolvedWeights,
    StudyConfig,
    from_dict,
    from_stored,
    identity_differences,
    load_config,
    to_dict,
)
from tuner.dimensions import Rule
from tuner.errors import TunerError
from tuner.recipe import DIMENSIONS, NEVER
from tuner.search.attrs import params_from_record

STUDIES = Path(__file__).resolve().parents[1] / "studies"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def test_default_yaml_is_the_built_in_default() -> None:
    assert load_config(STUDIES / "default.yaml") == load_config(None)


@pytest.mark.parametrize("name", ["default", "cifar10", "cifar10-subset"])
def test_shipped_studies_load(name: str) -> None:
    config = load_config(STUDIES / f"{name}.yaml")
    assert config.search.study == name


def test_cifar10_subset_reproduces_the_notebooks() -> None:
    data = load_config(STUDIES / "cifar10-subset.yaml").data
    assert (data.classes, data.per_class, data.val_source) == (("cat", "dog", "horse"), 500, "test")


def test_imagefolder_needs_a_path_and_takes_it_from_set() -> None:
    with pytest.raises(TunerError, match=r"imagefolder\.yaml.*data\.path"):
        load_config(STUDIES / "imagefolder.yaml")
    config = load_config(STUDIES / "imagefolder.yaml", ["data.path=/data/pets"])
    assert config.data.path == "/data/pets"


def test_space_forms(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
space:
  freeze_depth: 3
  unfreeze_epoch: {choices: [never, 1]}
  head_lr: {low: 1e-4, high: 1e-2, log: true}
  batch_size: {low: 16, high: 64, step: 16}
""",
    )
    space = load_config(path).space
    assert space.freeze_depth == Fixed(3)
    assert space.unfreeze_epoch == Choice((NEVER, 1))
    assert space.head_lr == FloatRange(1e-4, 1e-2, log=True)  # 1e-4 is text in YAML 1.1
    assert space.batch_size == IntRange(16, 64, 16)


def test_overrides_parse_yaml_values() -> None:
    config = load_config(None, ["train.epochs=3", "data.classes=[a, b]", "space.optimizer=adam"])
    assert config.train.epochs == 3
    assert config.data.classes == ("a", "b")
    assert config.space.optimizer == Fixed("adam")


def test_study_name_defaults_to_file_stem(tmp_path: Path) -> None:
    path = tmp_path / "pets-v2.yaml"
    path.write_text("train: {epochs: 3}\n")
    assert load_config(path).search.study == "pets-v2"


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("data: {colour: red}", "data.colour", "unknown key"),
        ("training: {epochs: 3}", "training", "unknown section"),
        ("train: {epochs: three}", "train.epochs", "must be an integer"),
        ("train: {epochs: 0}", "train.epochs", "must be in 1..1000"),
        ("data: {source: imagenet}", "data.source", "must be one of"),
        ("data: {augment: 7}", "data.augment", "must be one of"),
        ("search: {baselines: maybe}", "search.baselines", "true or false"),
        ("space: {head_lr: {low: 0.1, high: 0.01}}", "space.head_lr", "greater than high"),
        ("space: {optimizer: {choices: []}}", "space.optimizer.choices", "non-empty"),
        ("space: {freeze_depth: 6}", "space.freeze_depth", "0..5"),
        ("space: {freeze_depth: {low: -1, high: 5}}", "space.freeze_depth.low", "0..5"),
        ("space: {optimizer: {choices: [sgd, rmsprop]}}", "space.optimizer.choices", "one of"),
        ("space: {unfreeze_epoch: {choices: [never, 9]}}", "space.unfreeze_epoch", "train.epochs"),
        ("space: {head_lr: {low: 0.0, high: 0.1, log: true}}", "space.head_lr.low", "1e-09"),
        ("space: {dropout: 0.1}", "space.dropout", "unknown dimension"),
        ("space: {optimizer: {low: 1, high: 2}}", "space.optimizer", "not a range"),
        ("data: {relabel: {a: [cat], b: [cat]}}", "data.relabel", "mapped to both"),
        ("data: {source: digits, val_source: test}", "data.val_source", "has none: use holdout"),
        ("search: {study: 'a b'}", "search.study", "letters, digits"),
        (
            "data: {val_fraction: 0.5, test_fraction: 0.45}",
            "data.test_fraction",
            "data.val_fraction (0.5) + data.test_fraction (0.45) leave less than 10%",
        ),
        ("data: {test_source: val}", "data.test_source", "must be one of auto, holdout, none"),
    ],
)
def test_validation_errors_name_file_and_key(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(TunerError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {key}:"), message
    assert problem in message


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TunerError, match="not valid YAML at line"):
        load_config(write(tmp_path, "data:\n  source: [unclosed\n"))
    with pytest.raises(TunerError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")


def test_bad_override() -> None:
    with pytest.raises(TunerError, match=r"section\.key=value"):
        load_config(None, ["epochs=3"])
    with pytest.raises(TunerError, match=r"with --set.*train\.epochs"):
        load_config(None, ["train.epochs=-2"])


def test_round_trip_through_plain_data(tmp_path: Path) -> None:
    config = load_config(
        STUDIES / "cifar10-subset.yaml",
        ["data.relabel={animal: [cat, dog], other: [horse]}", "space.freeze_depth=2"],
    )
    assert from_dict(to_dict(config)) == config


def test_identity_differences_ignore_budget_and_device() -> None:
    base = load_config(None)
    same = load_config(None, ["search.trials=8", "train.device=cpu"])
    assert identity_differences(base, same) == []
    other = load_config(None, ["train.epochs=3", "space.optimizer=adam"])
    found = identity_differences(base, other)
    assert [line.split(":")[0] for line in found] == ["space.optimizer", "train.epochs"]


def section_rules() -> Iterator[tuple[str, dataclasses.Field]]:
    """Every key of every section, as (dotted key, its field)."""
    for section in dataclasses.fields(StudyConfig):
        for key in dataclasses.fields(section.default_factory):
            yield f"{section.name}.{key.name}", key


def test_every_key_declares_its_rule() -> None:
    # A key added without a rule would go unchecked: it must fail here instead.
    keys = dict(section_rules())
    assert len(keys) > 40
    for dotted, key in keys.items():
        assert isinstance(key.metadata.get("rule"), Rule), dotted
        assert callable(key.metadata.get("parse")), dotted


BOUND_CASES = [
    pytest.param(dotted, key.metadata["rule"], side, id=f"{dotted}.{side}")
    for dotted, key in section_rules()
    for side in ("low", "high")
    if getattr(key.metadata["rule"], side) is not None
]


@pytest.mark.parametrize(("dotted", "rule", "side"), BOUND_CASES)
def test_declared_bounds_are_what_the_validator_enforces(
    dotted: str, rule: Rule, side: str
) -> None:
    step = rule.kind(1)
    value = rule.high + step if side == "high" else rule.low - step
    section, key = dotted.split(".")
    with pytest.raises(TunerError) as caught:
        from_dict({section: {key: value}})
    span = f"{rule.low}..{rule.high}" if rule.high is not None else f">= {rule.low}"
    assert str(caught.value) == f"stored study config: {dotted}: must be in {span}, got {value!r}."


def test_declared_choices_are_what_the_validator_enforces() -> None:
    checked = 0
    for dotted, key in section_rules():
        choices = key.metadata["rule"].choices
        if choices is None:
            continue
        section, name = dotted.split(".")
        with pytest.raises(TunerError) as caught:
            from_dict({section: {name: "nope"}})
        assert str(caught.value).endswith(
            f"{dotted}: must be one of {', '.join(choices)}, got 'nope'."
        )
        checked += 1
    assert checked >= 10


def test_never_as_a_range_bound_is_a_clear_error() -> None:
    with pytest.raises(TunerError) as caught:
        load_config(None, ["space.unfreeze_epoch={low: never, high: 2}"])
    message = str(caught.value)
    assert "space.unfreeze_epoch.low: a range takes numbers" in message
    assert "choices" in message


def test_a_study_stored_before_the_new_dimensions_reads_back_as_it_ran() -> None:
    stored = to_dict(load_config(None))
    del stored["space"]
    stored["model"] = {"arch": "resnet50", "weights": "imagenet"}
    stored["train"] = {**stored["train"], "label_smoothing": 0.1}
    space = from_stored(stored).space
    assert space.arch == Fixed("resnet50") and space.label_smoothing == Fixed(0.1)
    off = {"layer_decay": 1.0, "warmup_epochs": 0, "ema": 0.0, "mixup": 0.0, "cutmix": 0.0}
    assert {name: getattr(space, name) for name in off} == {k: Fixed(v) for k, v in off.items()}
    assert space.bn_policy == Fixed("train")
    later = [name for name, info in DIMENSIONS.items() if info.stored_before is not None]
    assert all(isinstance(getattr(space, name), Fixed) for name in later)  # none searched anew
    recorded = {"freeze_depth": 0, "unfreeze_epoch": None, "unfreeze_mode": "all",
                "head_lr": 1e-3, "backbone_lr": 1e-4, "optimizer": "adam", "batch_size": 32,
                "weight_decay": 0.0}  # fmt: skip
    params = params_from_record(recorded, space)
    assert (params.arch, params.label_smoothing, params.ema) == ("resnet50", 0.1, 0.0)
    assert PinnedWeights.from_dict(ResolvedWeights.random_init().to_dict(), space.arch).archs == (
        "resnet50",
    )


def test_keys_that_became_dimensions_are_read_from_old_files_once(tmp_path: Path) -> None:
    old = write(tmp_path, "model: {arch: resnet34}\ntrain: {label_smoothing: 0.2}\n")
    space = load_config(old).space
    assert (space.arch, space.label_smoothing) == (Fixed("resnet34"), Fixed(0.2))
    both = write(tmp_path, "model: {arch: resnet34}\nspace: {arch: resnet18}\n")
    with pytest.raises(TunerError, match=r"model\.arch: is now space\.arch; give it there only"):
        load_config(both)


def test_warmup_must_leave_an_epoch_at_the_full_rate() -> None:
    with pytest.raises(TunerError, match=r"space\.warmup_epochs: 4 warm-up epochs"):
        load_config(None, ["space.warmup_epochs={choices: [0, 4]}"])
