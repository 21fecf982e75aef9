"""Progress in a log file: plain lines with counts, rate and ETA, never carriage returns."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from tuner.errors import TunerError
from tuner.progress import INTERVAL_ENV, Progress, interval_seconds
from tuner.run.progress import DataProgress, SearchProgress


class Clock:
    """A clock the test moves by hand, so rates and ETAs are exact."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_every_interval_with_rate_eta_and_a_final_line() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress(
        "preparing data", 10000, "images", rate_unit="img", stream=out, interval=5, clock=clock
    )
    for now, done in [(0, 0), (1, 850), (4, 3400), (6, 5100), (12, 10000)]:
        clock.now = now
        progress.update(done)
    progress.close()
    progress.close()  # a second close prints nothing
    assert out.getvalue().splitlines() == [
        "preparing data: 0/10000 images",
        "preparing data: 5100/10000 images, 850 img/s, ETA 6s",
        "preparing data: 10000/10000 images, 833 img/s, took 12s",
    ]


def test_slow_rates_per_minute_and_long_etas_in_minutes() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress("search s", 50, "trials", stream=out, interval=0, clock=clock)
    progress.update(2, "running 1", "best -")
    clock.now = 600
    progress.update(12, "running 2", "best 0.9666 (#4)")
    assert out.getvalue().splitlines()[-1] == (
        "search s: 12/50 trials (running 2), 1.0 trials/min, ETA 38m00s, best 0.9666 (#4)"
    )


def test_a_terminal_gets_the_tqdm_bar() -> None:
    out = Terminal()
    progress = Progress("preparing data", 10, "images", stream=out, interval=0)
    progress.update(5)
    progress.write("a message")
    progress.close()
    assert "\r" in out.getvalue() and "a message" in out.getvalue()


def test_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    assert interval_seconds() == 10
    monkeypatch.setenv(INTERVAL_ENV, "2.5")
    assert interval_seconds() == 2.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv(INTERVAL_ENV, bad)
        with pytest.raises(TunerError, match=INTERVAL_ENV):
            interval_seconds()


def _trial(state: TrialState, value: float | None, batch_size: int) -> optuna.trial.FrozenTrial:
    return create_trial(
        state=state,
        value=value,
        params={"batch_size": batch_size},
        distributions={"batch_size": CategoricalDistribution([32, 64])},
    )


def test_search_progress_reads_the_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(INTERVAL_ENV, "0")
    study = optuna.create_study(
        study_name="demo", storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize"
    )
    progress = SearchProgress(study, budget=5)
    study.add_trial(_trial(TrialState.COMPLETE, 0.9, 32))
    study.add_trial(_trial(TrialState.COMPLETE, 0.9666, 64))
    study.add_trial(_trial(TrialState.PRUNED, None, 32))
    study.add_trial(_trial(TrialState.FAIL, None, 32))
    study.ask()  # a trial still running
    progress(study, study.trials[-1])
    progress.write("worker 1 died")
    progress.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == (
        "search demo: 0/5 trials (running 0, complete 0, pruned 0, failed 0), best -"
    )
    assert lines[1].startswith(
        "search demo: 3/5 trials (running 1, complete 2, pruned 1, failed 1), "
    )
    assert " trials/" in lines[1] and ", ETA " in lines[1]
    assert lines[1].endswith(", best 0.9666 (#1)")
    assert lines[2] == "worker 1 died"
    assert lines[3].startswith("search demo: 3/5 trials (running 1, complete 2, pruned 1")
    assert ", took " in lines[3] and lines[3].endswith("best 0.9666 (#1)")


def test_data_progress_starts_again_for_a_new_total(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(INTERVAL_ENV, "0")
    data = DataProgress()
    for done, total in [(0, 4), (2, 4), (4, 4), (0, 6), (3, 6)]:
        data(done, total)
    data.close()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "preparing data: 0/4 images",
        "preparing data: 2/4 images",
        "preparing data: 4/4 images",  # the final line of the first pass
        "preparing data: 0/6 images",
        "preparing data: 3/6 images",
        "preparing data: 3/6 images",  # closed before the end
    ]
    assert "took" in lines[2] and "img/" in lines[2]


def test_the_base_module_imports_neither_torch_nor_optuna() -> None:
    code = "import sys, tuner.progress; print('torch' in sys.modules, 'optuna' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["False", "False"], result.stderr
