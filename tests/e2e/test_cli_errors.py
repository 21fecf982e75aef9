"""Bad input gets one clear paragraph, exit status 2 and no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.tuner_cli import run_tuner

pytestmark = pytest.mark.slow


def assert_user_error(result, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def assert_no_study_created(folder: Path) -> None:
    import optuna

    if (folder / "tuner.db").exists():
        assert optuna.get_all_study_names(f"sqlite:///{folder / 'tuner.db'}") == []


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("train: {epoch: 3}\n")
    assert_user_error(
        run_tuner(tmp_path, "search", "bad.yaml"), "bad.yaml: train.epoch: unknown key"
    )


def test_missing_folder_path(tmp_path: Path) -> None:
    result = run_tuner(
        tmp_path, "search", "--set", "data.source=folder", "--set", "data.path=/nonexistent/pets"
    )
    assert_user_error(result, "/nonexistent/pets")
    assert_no_study_created(tmp_path)
    # the data is checked right after the study and config lines, before weights and the rest
    before = result.stdout.splitlines() + result.stderr.splitlines()[:-1]
    assert len(before) < 5, before
    error = "tuner search: error: data.path: /nonexistent/pets does not exist"
    assert result.stderr.splitlines()[-1].startswith(error)


def test_missing_torchvision_files_say_where(tmp_path: Path) -> None:
    result = run_tuner(
        tmp_path, "search", "--set", "data.source=cifar10", "--set", "data.root=nowhere"
    )
    assert_user_error(result, "data.root", "nowhere")
    assert_no_study_created(tmp_path)


@pytest.mark.parametrize("command", [["status"], ["export-best"]])
def test_commands_without_a_storage(tmp_path: Path, command: list[str]) -> None:
    assert_user_error(run_tuner(tmp_path, *command), "no such database file")
    assert not (tmp_path / "tuner.db").exists()


def test_export_unknown_study(tmp_path: Path, tiny_study_file: Path) -> None:
    import optuna

    optuna.create_study(study_name="other", storage=f"sqlite:///{tmp_path / 'tuner.db'}")
    (tmp_path / "tuner-artifacts").mkdir()
    assert_user_error(
        run_tuner(tmp_path, "export-best", "--study", "nope"), "'nope' is not in this storage"
    )
    assert_user_error(run_tuner(tmp_path, "export-best", "--study", "other"), "not made by tuner")


def test_a_failed_download_says_where_to_put_the_files(tmp_path: Path) -> None:
    refuse = {
        var: "http://127.0.0.1:9"
        for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY")
    }
    result = run_tuner(
        tmp_path,
        "search",
        "--set",
        "data.source=mnist",
        "--set",
        "data.download=true",
        "--set",
        "data.root=mnist-here",
        env=refuse,
    )
    assert_user_error(result, "data.download", "mnist-here")
    assert_no_study_created(tmp_path)


def test_a_port_out_of_range_is_refused_before_anything(tmp_path: Path) -> None:
    result = run_tuner(tmp_path, "dashboard", "--port", "99999")
    assert_user_error(result, "--port", "'99999' is not a port", "1 to 65535")
    assert not (tmp_path / "tuner.db").exists()


def test_a_pickled_object_as_weights_is_refused_in_one_line(tmp_path: Path) -> None:
    """Not torch's page on how to load it anyway: what the file is and how to save weights."""
    import argparse

    import torch

    path = tmp_path / "whole-model.pt"
    torch.save(argparse.Namespace(model="anything but a state dict"), path)
    result = run_tuner(
        tmp_path, "search", "--set", "data.per_class=10", "--set", f"model.weights={path}"
    )
    assert_user_error(
        result, str(path), "weights_only=True", "not a plain state dict",
        "torch.save(model.state_dict(), path)", "safetensors",
    )  # fmt: skip
    error = [line for line in result.stderr.splitlines() if line.startswith("tuner search:")]
    assert error == [result.stderr.splitlines()[-1]]  # one line, the last
    assert "Unsupported global" not in result.stderr and "add_safe_globals" not in result.stderr
    assert_no_study_created(tmp_path)
