"""`tuner dashboard` on a tiny real search: its JSON API, and the page in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.tuner_cli import run_tuner, start_tuner

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def _wait_until_up(base: str, process: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            _get(f"{base}/api/meta")
            return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the dashboard did not answer within 120 s:\n{log.read_text()}")


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    return subprocess.run(
        [*command, "--virtual-time-budget=20000", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


def _visible_text(dom: str) -> str:
    import re

    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", dom).split())


@pytest.fixture(scope="module")
def dashboard(searched: Path):
    """`tuner dashboard` serving the searched folder's study, stopped with Ctrl-C afterwards."""
    port = _free_port()
    process = start_tuner(searched, "dashboard", "--port", str(port), log="dashboard.log")
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(base, process, searched / "dashboard.log")
        yield base, process
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)


def test_json_api_serves_the_study_with_notes_and_figures(dashboard, searched: Path) -> None:
    base, _ = dashboard
    summaries = json.loads(_get(f"{base}/api/studies"))["study_summaries"]
    study = next(s for s in summaries if s["study_name"] == "tiny")
    detail = json.loads(_get(f"{base}/api/studies/{study['study_id']}"))
    assert len(detail["trials"]) == 5
    assert "## Study tiny" in detail["note"]["body"] and "```yaml" in detail["note"]["body"]
    best = max(
        (t for t in detail["trials"] if t["state"] == "Complete"), key=lambda t: t["values"][0]
    )
    note = best["note"]["body"]
    assert "**Schedule:**" in note
    assert f"tuner export-best --study tiny --trial {best['number']}" in note
    names = {a["filename"]: a for a in best["artifacts"]}
    curve = names[f"learning-curve-trial-{best['number']}.png"]
    assert f"confusion-matrix-trial-{best['number']}.png" in names
    png = _get(f"{base}/artifacts/{study['study_id']}/{best['trial_id']}/{curve['artifact_id']}")
    assert png.startswith(b"\x89PNG") and len(png) > 5_000


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("TUNER_REQUIRE_BROWSER"),
    reason="Debian's chromium is not installed (.ci/run installs it)",
)
def test_chromium_renders_the_study_its_trials_and_a_note(dashboard, tmp_path: Path) -> None:
    assert CHROMIUM, "TUNER_REQUIRE_BROWSER is set but chromium is not installed"
    base, _ = dashboard
    page = f"{base}/dashboard/studies/1/trials?numbers=0"
    rendered = _chromium("--dump-dom", page)
    text = _visible_text(rendered.stdout)
    assert "tiny" in text, rendered.stderr[-2000:]
    assert "5 Trials" in text
    assert "Trial 0:" in text and "Schedule:" in text  # the trial's note, rendered
    shot = tmp_path / "dashboard.png"
    _chromium(f"--screenshot={shot}", "--window-size=1400,1000", page)
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 20_000


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_dashboard_stops_cleanly_on_ctrl_c_and_sigterm(searched: Path, stop: int) -> None:
    port = _free_port()
    process = start_tuner(searched, "dashboard", "--port", str(port), log="stop.log")
    _wait_until_up(f"http://127.0.0.1:{port}", process, searched / "stop.log")
    process.send_signal(stop)
    assert process.wait(timeout=20) == 0
    log = (searched / "stop.log").read_text()
    assert "dashboard stopped." in log and "Traceback" not in log


def test_a_taken_port_is_refused_in_one_line(searched: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_tuner(searched, "dashboard", "--port", str(port), timeout=120)
    assert result.returncode == 2
    assert f"--port {port}: cannot listen there" in result.stderr
    assert "Traceback" not in result.stderr


def test_binding_beyond_this_machine_warns_in_one_line(searched: Path) -> None:
    port = _free_port()
    process = start_tuner(
        searched, "dashboard", "--host", "0.0.0.0", "--port", str(port), log="open.log"
    )
    try:
        _wait_until_up(f"http://127.0.0.1:{port}", process, searched / "open.log")
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
    warnings = [
        line for line in (searched / "open.log").read_text().splitlines() if "warning" in line
    ]
    assert len(warnings) == 1 and "no authentication" in warnings[0]
