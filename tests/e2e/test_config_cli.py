"""What `tuner search` shows first, and `tuner config show`, through the real command line.

A newcomer reads the first screen: a short header (the study, what the config changes from the
built-in default, data, weights, device), not the whole resolved config; that is kept in the
study and in a file the header names, and `tuner config show` prints it.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from tests.e2e.tuner_cli import run_tuner, start_tuner
from tuner.config import load_config, to_dict
from tuner.search.attrs import CONFIG

pytestmark = pytest.mark.slow

HEADER_LINES = 15  # at most, before the search's progress


def test_the_header_is_short_and_the_full_config_is_kept_in_a_file(
    tmp_path: Path, tiny_study_file: Path
) -> None:
    search = start_tuner(
        tmp_path, "search", str(tiny_study_file), "--trials", "1",
        "--set", "search.baselines=false", log="search.log",
    )  # fmt: skip
    assert search.wait(timeout=600) == 0, (tmp_path / "search.log").read_text()[-3000:]
    lines = (tmp_path / "search.log").read_text().splitlines()
    header = lines[: next(i for i, line in enumerate(lines) if line.startswith("search tiny:"))]
    assert len(header) <= HEADER_LINES, "\n".join(header)
    assert header[0] == "study:     'tiny' (new) in sqlite:///tuner.db"
    (config_line,) = [line for line in header if line.startswith("config:")]
    assert config_line.startswith(
        f"config:    {tiny_study_file}: the built-in default with data.per_class=20, "
        "data.image_size=16, model.weights=none, train.epochs=2,"
    )
    assert "space.batch_size={choices: [32, 64]}" in config_line
    assert "search.study" not in config_line  # the study line names it
    # 12 keys differ (search.baselines=false among them): 8 are named, the rest counted
    assert config_line.endswith(" and 4 more (in full: tuner-logs/tiny/config.yaml)")
    for label in ("data:", "weights:", "confirm:", "artifacts:", "device:", "placement:"):
        assert any(line.startswith(label) for line in header), (label, header)
    written = yaml.safe_load((tmp_path / "tuner-logs" / "tiny" / "config.yaml").read_text())
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'tuner.db'}")
    assert written == study.user_attrs[CONFIG]
    shown = run_tuner(tmp_path, "config", "show", "--study", "tiny")
    assert shown.returncode == 0, shown.stderr
    assert yaml.safe_load(shown.stdout) == written


def test_config_show_prints_a_file_with_its_overrides_or_the_default(
    tmp_path: Path, tiny_study_file: Path
) -> None:
    shown = run_tuner(tmp_path, "config", "show", str(tiny_study_file), "--set", "train.epochs=3")
    assert shown.returncode == 0, shown.stderr
    expected = load_config(tiny_study_file, ["train.epochs=3"])
    assert yaml.safe_load(shown.stdout) == to_dict(expected)
    default = run_tuner(tmp_path, "config", "show")
    assert default.returncode == 0, default.stderr
    assert yaml.safe_load(default.stdout) == to_dict(load_config(None))
    assert not (tmp_path / "tuner.db").exists()  # showing a file opens no storage


def test_config_show_refusals_are_one_line(tmp_path: Path, tiny_study_file: Path) -> None:
    both = run_tuner(tmp_path, "config", "show", str(tiny_study_file), "--study", "tiny")
    no_storage = run_tuner(tmp_path, "config", "show", "--study", "tiny")
    bad_key = run_tuner(tmp_path, "config", "show", "--set", "train.epoch=3")
    for result, fragment in (
        (both, "give one or the other"),
        (no_storage, "no such database file"),
        (bad_key, "train.epoch: unknown key"),
    ):
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and fragment in result.stderr
