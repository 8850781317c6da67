"""`make mlflow-ui` (`nextbuy mlflow-ui`): one server process on 127.0.0.1, the printed link
opens the nextbuy experiment in the classic ML view (no GenAI mode, no assistant panel, no
telemetry banner), and SIGTERM leaves no process of its group (no huey_consumer) behind.

One launcher serves the module's tests in file order; the last one stops it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from nextbuy import procs
from nextbuy.mlops import mlflow_ui
from nextbuy.mlops.tracking import EXPERIMENT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
START_TIMEOUT = 240.0  # seconds; a few on an idle machine, more on a loaded 2-core one


# --- the HTML rewrite, without a server ---------------------------------------------------


def run_asgi(app, path: str = "/", method: str = "GET", request_headers=()):
    """Drive an ASGI app once; returns (status, headers dict, body)."""
    sent: list[dict] = []
    scope = {"type": "http", "path": path, "method": method, "headers": list(request_headers)}

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), body


def index_app(seen_headers: list):
    """A stand-in for MLflow's app: index.html in two chunks, with cache validators."""

    async def app(scope, receive, send):
        seen_headers.append(dict(scope["headers"]))
        headers = [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"etag", b'"v1"'),
            (b"content-length", b"55"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"<html><head><title>M</title>", "more_body": True})
        await send({"type": "http.response.body", "body": b"</head><body></body></html>"})

    return app


def test_index_html_gets_the_browser_defaults_first_and_is_never_revalidated():
    seen: list = []
    status, headers, body = run_asgi(
        mlflow_ui.browser_defaults(index_app(seen)), request_headers=[(b"if-none-match", b'"v1"')]
    )
    assert status == 200
    assert body.startswith(b"<html><head>" + mlflow_ui.UI_SCRIPT + mlflow_ui.UI_STYLE + b"<title>")
    assert headers[b"content-length"] == str(len(body)).encode()
    assert headers[b"cache-control"] == b"no-store"
    assert b"etag" not in headers
    assert b"if-none-match" not in seen[0]  # a browser's cached, unpatched page is not reused
    for key in ("mlflow.assistant.fab.autoOpenedOnFirstLoad_v1", "mlflow.workflowType_v1"):
        assert key.encode() in mlflow_ui.UI_SCRIPT


def test_other_paths_pass_through_untouched():
    seen: list = []
    _, headers, body = run_asgi(mlflow_ui.browser_defaults(index_app(seen)), path="/static-files/x.js")
    assert mlflow_ui.UI_SCRIPT not in body
    assert headers[b"etag"] == b'"v1"'


def test_the_printed_link_names_the_experiment_and_the_classic_view():
    assert (
        mlflow_ui.experiment_url("http://127.0.0.1:5000", "7")
        == "http://127.0.0.1:5000/#/experiments/7?workflowType=machine_learning"
    )


# --- the launcher against a small store ----------------------------------------------------


def make_store(root: Path) -> tuple[str, str]:
    """A sqlite store with the nextbuy experiment and one finished run; (uri, experiment id)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment_id = client.create_experiment(EXPERIMENT, artifact_location=(root / "mlartifacts").as_uri())
    run = client.create_run(experiment_id, run_name="train")
    client.log_metric(run.info.run_id, "calib_auc", 0.7)
    client.set_terminated(run.info.run_id)
    return uri, experiment_id


def processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, pgid, command line) of every live (non-zombie) process."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fields[0] != "Z":
            found[int(stat.parent.name)] = (int(fields[1]), int(fields[2]), cmdline)
    return found


def group_members(pgid: int) -> list[str]:
    return [cmd for _, group, cmd in processes().values() if group == pgid]


class Launcher:
    def __init__(self, root: Path, uri: str, experiment_id: str):
        self.root, self.experiment_id, self.port = root, experiment_id, procs.free_port()
        self.out = root / "launcher.out"
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "nextbuy.cli",
                    "mlflow-ui",
                    "--backend-store-uri",
                    uri,
                    "--port",
                    str(self.port),
                ],
                cwd=root,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a group of its own, so the test can always clean it up
            )
        self.started = time.monotonic()
        self.ready_after: float | None = None
        self.server_pgid: int | None = None

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while "ready in" not in self.text():
            assert self.proc.poll() is None, f"launcher exited {self.proc.returncode}:\n{self.text()}"
            assert time.monotonic() < deadline, f"not ready after {START_TIMEOUT:.0f} s:\n{self.text()}"
            time.sleep(0.2)
        self.ready_after = time.monotonic() - self.started
        children = [pid for pid, (ppid, _, _) in processes().items() if ppid == self.proc.pid]
        assert len(children) == 1, children
        self.server_pgid = os.getpgid(children[0])

    def kill_everything(self) -> None:
        for pgid in (self.proc.pid, self.server_pgid):
            if pgid is not None and procs.group_alive(pgid):
                os.killpg(pgid, signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def launcher(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-ui")
    uri, experiment_id = make_store(root)
    ui = Launcher(root, uri, experiment_id)
    try:
        ui.wait_ready()
        yield ui
    finally:
        ui.kill_everything()  # a no-op once the last test stopped it


def printed_url(text: str) -> str:
    match = re.search(r"experiment 'nextbuy' \(classic ML view\): (\S+)", text)
    assert match, text
    return match.group(1)


def test_it_serves_on_localhost_as_one_process_without_job_consumers(launcher):
    with urllib.request.urlopen(f"http://127.0.0.1:{launcher.port}/health", timeout=10) as response:
        assert response.status == 200
    members = group_members(launcher.server_pgid)
    assert len(members) == 1, members
    assert "nextbuy.mlops.mlflow_ui" in members[0], members
    assert not any("huey" in cmd for cmd in members)
    print(f"MLflow UI ready after {launcher.ready_after:.1f} s")


def test_the_printed_link_opens_the_nextbuy_experiment(launcher):
    url = printed_url(launcher.text())
    base = f"http://127.0.0.1:{launcher.port}"
    assert url == mlflow_ui.experiment_url(base, launcher.experiment_id)
    with urllib.request.urlopen(url, timeout=10) as response:  # the page (the fragment stays in the browser)
        assert mlflow_ui.UI_SCRIPT in response.read()
    api = f"{base}/api/2.0/mlflow/experiments/get?experiment_id={launcher.experiment_id}"
    with urllib.request.urlopen(api, timeout=10) as response:
        assert json.load(response)["experiment"]["name"] == EXPERIMENT


def dump_dom(url: str, profile: Path) -> str:
    """The DOM headless chromium renders for ``url`` with a fresh profile (a first visit)."""
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            f"--user-data-dir={profile}",
            "--window-size=1600,1000",
            "--virtual-time-budget=20000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (headless check of the rendered UI)")
def test_a_first_visit_shows_the_runs_without_assistant_panel_or_telemetry_banner(launcher, tmp_path):
    page = dump_dom(printed_url(launcher.text()), tmp_path / "profile-experiment")
    # Classic ML view: the experiment's Runs page (GenAI mode opens on "Overview").
    assert f"<title>Runs - Experiment {launcher.experiment_id} - MLflow</title>" in page, page[:2000]
    assert "train" in page  # the run
    assert "mlflow.assistant.chat_panel" not in page  # the panel is closed (its button may show)
    home = dump_dom(f"http://127.0.0.1:{launcher.port}/", tmp_path / "profile-home")
    assert "Welcome to MLflow" in home, home[:2000]
    assert "mlflow.home.telemetry-alert" not in home
    assert "MLflow collects usage data" not in home


def test_sigterm_stops_the_whole_group(launcher):
    assert procs.group_alive(launcher.server_pgid)
    launcher.proc.send_signal(signal.SIGTERM)
    assert launcher.proc.wait(timeout=60) == 0, launcher.text()
    assert "MLflow UI stopped." in launcher.text()
    # Nothing of the server's group is left (plain `mlflow ui` left seven huey_consumer here).
    assert not procs.group_alive(launcher.server_pgid), group_members(launcher.server_pgid)
    assert not procs.port_open(launcher.port)


def test_the_server_stops_by_itself_when_its_launcher_is_killed_outright(tmp_path):
    """kill -9 of make's group leaves the server (a group of its own) without a launcher to stop it."""
    server = (
        "import os, sys, time\n"
        "from nextbuy.mlops import mlflow_ui\n"
        "mlflow_ui.stop_with_parent(int(sys.argv[1]), every=0.1)\n"
        "open(sys.argv[2], 'w').write(str(os.getpid()))\n"
        "time.sleep(60)\n"
    )
    pid_file = tmp_path / "server.pid"
    launcher = (
        "import os, subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {server!r}, str(os.getpid()), {str(pid_file)!r}],"
        " start_new_session=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", launcher], start_new_session=True)
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    server_pid = int(pid_file.read_text())
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while procs.group_alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    gone = not procs.group_alive(server_pid)
    if not gone:
        os.killpg(server_pid, signal.SIGKILL)
    assert gone
