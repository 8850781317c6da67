"""The on-call dashboard as a person sees it: `evidently ui` on a filled workspace,
rendered in headless Chromium.

Needs Debian's chromium (`apt-get install -y chromium`); skipped without it. Keeps a screenshot as a test
artifact under $NEXTBUY_TEST_ARTIFACTS (else the test's tmp dir) and prints its path.
"""

from __future__ import annotations

import contextlib
import html
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.mlops.dashboards.workspace import N_BUCKETS, expected_panel_titles, fill_workspace

pytestmark = pytest.mark.slow

EVIDENTLY = Path(sys.executable).with_name("evidently")
SERVER_START_TIMEOUT_S = 90
CHROMIUM_TIMEOUT_S = 120
# --force-prefers-reduced-motion: the charts draw their lines with a CSS reveal animation that headless
# screenshots can catch half-way (axes without lines); reduced motion makes them draw at once.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--force-prefers-reduced-motion",
    "--virtual-time-budget=15000",
]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """Stop the server's whole process group (it forks workers): SIGTERM, then SIGKILL on timeout."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


@pytest.fixture
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip(
            "chromium not installed (Debian: apt-get install -y chromium); cannot render the dashboard"
        )
    return path


@pytest.fixture
def evidently_ui(tmp_path):
    """(base url, project id, workspace) of a running `evidently ui` on a workspace of test windows."""
    workspace = tmp_path / "workspace"
    project_id, _ = fill_workspace(workspace)
    port = _free_port()
    log = (tmp_path / "evidently-ui.log").open("wb")
    env = dict(os.environ, DO_NOT_TRACK="1")
    proc = subprocess.Popen(
        [str(EVIDENTLY), "ui", "--workspace", str(workspace), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        env=env,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                log_text = (tmp_path / "evidently-ui.log").read_text()
                pytest.fail(f"evidently ui exited with {proc.returncode}:\n{log_text}")
            try:
                with urllib.request.urlopen(f"{base}/api/projects/{project_id}/info", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"evidently ui did not answer on {base} within {SERVER_START_TIMEOUT_S} s")
            time.sleep(0.5)
        yield base, project_id, workspace
    finally:
        _stop(proc)
        log.close()


def _chromium(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        timeout=CHROMIUM_TIMEOUT_S,
    )


def test_dashboard_renders_panels_with_data(chromium, evidently_ui, tmp_path):  # chromium first: skip early
    base, project_id, _ = evidently_ui
    url = f"{base}/projects/{project_id}"  # the project's dashboard tab in Evidently 0.7's UI

    dom = _chromium(chromium, tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr.decode(errors="replace")[-2000:]
    text = html.unescape(dom.stdout.decode(errors="replace"))
    missing = [t for t in expected_panel_titles(range(N_BUCKETS)) if t not in text]
    assert not missing, f"panel titles missing from the rendered dashboard: {missing}"
    assert "This dashboard is currently empty" not in text
    # legends are drawn only for series that came back with points: the data reached the charts
    legends = [f"bucket {b} estimated" for b in range(N_BUCKETS)] + ["share drifted", "buckets alerting"]
    assert not [t for t in legends if t not in text], "series legends missing: panels have no data"

    artifacts = Path(os.environ.get("NEXTBUY_TEST_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    screenshot = artifacts / "dashboard.png"
    screenshot.unlink(missing_ok=True)
    shot = _chromium(
        chromium, tmp_path / "profile-shot", f"--screenshot={screenshot}", "--window-size=1400,2000", url
    )
    assert shot.returncode == 0, shot.stderr.decode(errors="replace")[-2000:]
    assert screenshot.exists() and screenshot.stat().st_size > 20_000
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"dashboard screenshot: {screenshot}")
