"""The on-call dashboard as a person sees it: Evidently's UI as `make dashboards` serves it, on a
filled workspace (two pipeline runs: the current RUN published over OTHER_RUN), rendered in headless
Chromium; the DOM is read panel by panel.

Needs Debian's chromium (`apt-get install -y chromium`); skipped without it. Keeps a screenshot as a test
artifact under $NEXTBUY_TEST_ARTIFACTS (else the test's tmp dir) and prints its path.
"""

from __future__ import annotations

import contextlib
import html
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from nextbuy.mlops.dashboards.ui import TITLE
from tests.mlops.dashboards.workspace import (
    N_BUCKETS,
    N_WINDOWS,
    OTHER_RUN,
    OTHER_START,
    RUN,
    START,
    expected_panel_titles,
    fill_workspace,
)

pytestmark = pytest.mark.slow

DASHBOARDS_UI = [sys.executable, "-m", "nextbuy.mlops.dashboards.ui"]  # as `make dashboards` starts it
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
    """(base url, project id, workspace) of a running dashboards UI on a workspace of test windows."""
    workspace = tmp_path / "workspace"
    project_id, _ = fill_workspace(workspace)
    port = _free_port()
    log = (tmp_path / "evidently-ui.log").open("wb")
    env = dict(os.environ, DO_NOT_TRACK="1")
    proc = subprocess.Popen(
        [*DASHBOARDS_UI, "--workspace", str(workspace), "--port", str(port)],
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
                pytest.fail(f"the dashboards UI exited with {proc.returncode}:\n{log_text}")
            try:
                with urllib.request.urlopen(f"{base}/api/projects/{project_id}/info", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the dashboards UI did not answer on {base} within {SERVER_START_TIMEOUT_S} s")
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


def _panel_sections(dom: str) -> dict[str, str]:
    """{panel title: the DOM from its <h5> title to the next panel's} (panel cards are in dashboard order)."""
    heads = [(m.start(), html.unescape(m.group(1))) for m in re.finditer(r"<h5[^>]*>(.*?)</h5>", dom)]
    return {
        title: dom[start : heads[k + 1][0] if k + 1 < len(heads) else len(dom)]
        for k, (start, title) in enumerate(heads)
    }


def _counter_text(value: float) -> str:
    """How Evidently 0.7.23's counter prints a value: parseFloat(value.toFixed(2)), and "no value" for a
    falsy one (0, missing)."""
    if not value or math.isnan(value):
        return "no value"
    rounded = float(f"{value:.2f}")
    return str(int(rounded)) if rounded.is_integer() else repr(rounded)


def _latest_counter_values(workspace: Path, project_id: str) -> dict[str, float]:
    """The OnCallCounter values stored for RUN's latest window: what the counters must print."""
    from evidently.core.metric_types import SingleValue
    from evidently.ui.workspace import Workspace

    from nextbuy.mlops.dashboards.metrics import RUN_KEY

    ws = Workspace(str(workspace))
    runs = [ws.get_run(project_id, rid) for rid in ws.list_runs(project_id)]
    latest = max((r for r in runs if r.metadata.get(RUN_KEY) == RUN), key=lambda r: r.timestamp)
    values = {}
    for result in latest.metric_results.values():
        params = result.get_metric_value_location().metric.params if isinstance(result, SingleValue) else {}
        if str(params.get("type", "")).endswith(":OnCallCounter"):
            values[params["counter"]] = result.value
    return values


def _assert_panels_show_run_data(dom: str, workspace: Path, project_id: str) -> None:
    """Every panel of the stored dashboard is rendered with data, from RUN's N_WINDOWS windows only."""
    from evidently.ui.workspace import Workspace

    dashboard = Workspace(str(workspace)).get_dashboard(project_id)
    sections = _panel_sections(dom)
    counters = _latest_counter_values(workspace, project_id)
    assert counters["alerting_buckets"] < 1e-6  # RUN's latest window has no alert (OTHER_RUN's has one)
    for panel in dashboard.panels:
        kind = panel.plot_params["plot_type"]
        section = sections.get(panel.title)
        assert section is not None, f"panel {panel.title!r} not rendered"
        if kind == "text":
            assert RUN in panel.title
            continue
        if kind == "counter":
            shown = [html.unescape(v) for v in re.findall(r"<h2[^>]*>([^<]*)</h2>", section)]
            assert shown, f"counter {panel.title!r} shows {shown}, not numbers"
            assert all(re.fullmatch(r"-?\d+(\.\d+)?", v) for v in shown), (
                f"counter {panel.title!r} shows {shown}, not numbers"
            )
            expected = [
                _counter_text(counters.get(v.metric_labels.get("counter"), math.nan)) for v in panel.values
            ]
            assert shown == expected, f"counter {panel.title!r} shows {shown}, expected {expected}"
            continue
        legends = [html.unescape(t) for t in re.findall(r'MuiChartsLegend-label">([^<]*)<', section)]
        expected_legends = sorted(v.legend for v in panel.values)
        assert sorted(legends) == expected_legends, f"{panel.title!r}: legends {legends} (no data: no legend)"
        n_series = len(panel.values)
        if kind == "line":
            paths = re.findall(r'<path[^>]*class="MuiLineElement-root[^>]*>', section)
            assert len(paths) == n_series, panel.title
            assert all(re.search(r'd="M[\d.]', p) for p in paths), panel.title
            marks = len(re.findall(r'class="MuiMarkElement-root', section))  # one per non-missing point
            assert 0 < marks <= n_series * N_WINDOWS, f"{panel.title!r}: {marks} points of {n_series} series"
            if n_series == 1:
                assert marks == N_WINDOWS, f"{panel.title!r}: {marks} points, expected one per window of RUN"
        else:
            bars = re.findall(r'<rect[^>]*class="MuiBarElement-root[^>]*>', section)
            heights = [float(re.search(r'height="([^"]*)"', b).group(1)) for b in bars]
            assert len(bars) == n_series * N_WINDOWS, (
                f"{panel.title!r}: {len(bars)} bars, expected RUN's only"
            )
            assert sum(h > 0 for h in heights) >= N_WINDOWS, f"{panel.title!r}: bars without height"


def test_dashboard_renders_panels_with_data(chromium, evidently_ui, tmp_path):  # chromium first: skip early
    base, project_id, workspace = evidently_ui
    url = f"{base}/projects/{project_id}"  # the project's dashboard tab in Evidently 0.7's UI

    dom = _chromium(chromium, tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr.decode(errors="replace")[-2000:]
    raw = dom.stdout.decode(errors="replace")
    text = html.unescape(raw)
    missing = [t for t in expected_panel_titles(range(N_BUCKETS)) if t not in text]
    assert not missing, f"panel titles missing from the rendered dashboard: {missing}"
    assert "This dashboard is currently empty" not in text
    assert f"<title>{TITLE}</title>" in raw  # the browser tab says what is open
    assert "no value" not in text, "a counter shows 'no value'"
    _assert_panels_show_run_data(raw, workspace, project_id)

    # the other run's windows (later in time: they would be the "latest") are not drawn anywhere
    assert f"{START:%Y-%m-%d}" in text  # the x axes name RUN's windows
    assert f"{OTHER_START:%Y-%m}" not in text
    assert OTHER_RUN not in text

    artifacts = Path(os.environ.get("NEXTBUY_TEST_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    screenshot = artifacts / "dashboard.png"
    screenshot.unlink(missing_ok=True)
    shot = _chromium(
        chromium, tmp_path / "profile-shot", f"--screenshot={screenshot}", "--window-size=1400,4200", url
    )
    assert shot.returncode == 0, shot.stderr.decode(errors="replace")[-2000:]
    assert screenshot.exists()
    assert screenshot.stat().st_size > 20_000
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"dashboard screenshot: {screenshot}")
