"""`tuner report` through the real CLI, after a tiny real search."""

from __future__ import annotations

from pathlib import Path

import pytest
from plotly.offline import get_plotlyjs

from tests.e2e.tuner_cli import run_tuner

pytestmark = pytest.mark.slow


def test_report_writes_html_pngs_and_tables(searched: Path) -> None:
    result = run_tuner(searched, "report", "--out", "rep")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "report written to rep/" in result.stdout
    assert "classic: feature extraction" in result.stdout  # the results table, printed
    assert "accuracy points." in result.stdout or "a classic recipe" in result.stdout  # verdict
    written = {p.name for p in (searched / "rep").iterdir()}
    assert {"report.html", "trials.csv", "results.csv", "history.png", "curves.png"} <= written
    page = (searched / "rep" / "report.html").read_text().replace(get_plotlyjs(), "")
    assert "<script src" not in page and "https://cdn" not in page
    again = run_tuner(searched, "report", "--out", "rep")  # an existing folder: files replaced
    assert again.returncode == 0, again.stderr[-2000:]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--study", "nope"], "study 'nope' is not in this storage"),
        (["--out", "search.out"], "--out search.out: is a file"),
        (["--storage", "sqlite:///missing.db"], "missing.db"),
    ],
)
def test_report_refuses_bad_input_in_one_line(
    searched: Path, args: list[str], message: str
) -> None:
    result = run_tuner(searched, "report", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
