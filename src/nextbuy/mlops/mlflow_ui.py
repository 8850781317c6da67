"""`make mlflow-ui`: the MLflow UI on the classic ML view of the ``nextbuy`` experiment.

Plain ``mlflow ui`` (MLflow 3.17) is a poor fit for this project:

* it opens in GenAI mode: the UI's mode is a browser-side *workflow type* (the
  ``workflowType`` query parameter of an experiment URL, else localStorage
  ``mlflow.workflowType_v1``, default ``genai``). With the UI's GenAI / Model training
  switch on (it is, in 3.17) an experiment's view follows that, not its
  ``mlflow.experimentKind`` tag, so no tag on the experiment is needed or helps;
* on localhost it auto-opens the MLflow Assistant panel on first load
  (localStorage ``mlflow.assistant.fab.autoOpenedOnFirstLoad_v1``) and the home page
  shows a usage-telemetry banner until dismissed: there is no server option for either;
* it starts a uvicorn supervisor with 4 workers plus a job runner and seven
  ``huey_consumer`` processes (job execution is on by default), importing MLflow's
  server stack once in the CLI and again in every worker: minutes on a loaded host;
* SIGTERM to ``mlflow ui`` is forwarded to the uvicorn supervisor only: the job runner
  and its huey consumers are left to notice the server is gone (all seven still running
  8 s later here, longer on a loaded host or when the CLI process is killed outright).

Here the server is one process (``python -m nextbuy.mlops.mlflow_ui``): MLflow's own
ASGI app in a single in-process uvicorn, with job execution (no huey), the AI gateway
and telemetry off (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION``, ``MLFLOW_ENABLE_AI_GATEWAY``,
``MLFLOW_DISABLE_TELEMETRY``), and index.html served with a small script that sets the
UI's browser defaults: classic ML view, assistant panel closed, telemetry banner
dismissed. :func:`launch` (``nextbuy mlflow-ui``) runs it as its own process group,
waits until it answers, prints the experiment's URL and stops the whole group on
Ctrl-C or SIGTERM; the server also stops by itself once its launcher is gone (killed
outright), so stopping ``make mlflow-ui`` in any way never leaves it listening.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from nextbuy.mlops.tracking import EXPERIMENT
from nextbuy.mlops.ui_pages import PageRewrite
from nextbuy.procs import HOST, GroupServer, Stopped, port_open, stop_signals_raise

if TYPE_CHECKING:
    from nextbuy.serving.asgi import ASGIApp

DEFAULT_PORT = 5000
ML_VIEW = "machine_learning"  # the UI's workflowType of the classic view (the other one: "genai")

# For the server process, set before MLflow is imported. Job execution starts the huey
# consumers (and needs them to stop); this UI runs no jobs, gateway endpoints or telemetry.
SERVER_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",  # MLflow reads only "true" here (the Makefile's DO_NOT_TRACK=1 is not enough)
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "MLFLOW_ENABLE_AI_GATEWAY": "false",
    "MLFLOW_ENABLE_WORKSPACES": "false",
}

# localStorage keys of the MLflow 3.17 UI (`${key}_v${version}`, JSON values): set on every
# load of index.html (the panel and banner) or only where the browser has no choice yet (the view).
BROWSER_DEFAULTS = {
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
    "mlflow.assistant.panelOpen_v1": "false",
    "mlflow.telemetry.info.alert.dismissed_v1": "true",
    "mlflow.settings.telemetry.enabled_v1": "false",
}
BROWSER_DEFAULTS_IF_UNSET = {"mlflow.workflowType_v1": json.dumps(ML_VIEW)}


def _ui_script() -> bytes:
    """index.html's first script: the browser defaults above, before MLflow's bundle reads them."""
    always, if_unset = json.dumps(BROWSER_DEFAULTS), json.dumps(BROWSER_DEFAULTS_IF_UNSET)
    js = (
        f"var s=window.localStorage,f={always},d={if_unset},k;"
        "for(k in f)s.setItem(k,f[k]);"
        "for(k in d)if(s.getItem(k)===null)s.setItem(k,d[k]);"
    )
    return ("<script>(function(){try{" + js + "}catch(e){}})();</script>").encode()


UI_SCRIPT = _ui_script()

# The model card (a version's description) as MLflow renders its markdown: tables with no cell
# padding or rules, headings flush against them. Spaced out for reading, nothing else changed.
CARD = ".note-editor-preview-content"
UI_STYLE = (
    "<style>"
    f"{CARD} table{{border-collapse:collapse;margin:.4em 0 1.2em}}"
    f"{CARD} th,{CARD} td{{padding:4px 12px;border:1px solid #d9d9d9;text-align:left}}"
    f"{CARD} th{{background:#f5f5f5}}"
    f"{CARD} h1,{CARD} h2,{CARD} h3{{margin:1.4em 0 .6em}}"
    f"{CARD} p,{CARD} ul,{CARD} blockquote{{margin:.5em 0 .9em}}"
    "</style>"
).encode()


def experiment_url(base: str, experiment_id: str) -> str:
    """The experiment's page in the classic ML view (runs table, charts, models)."""
    return f"{base}/#/experiments/{experiment_id}?workflowType={ML_VIEW}"


def model_url(base: str, name: str) -> str:
    return f"{base}/#/models/{urllib.parse.quote(name)}"


def default_store(root: Path | None = None) -> str:
    return f"sqlite:///{(root or Path.cwd()).resolve() / 'mlflow.db'}"


# --- the launcher ----------------------------------------------------------------


class MlflowUI(GroupServer):
    """The UI server (``python -m nextbuy.mlops.mlflow_ui``) as its own process group;
    ready once ``/health`` answers."""

    def __init__(
        self,
        backend_store_uri: str,
        port: int = DEFAULT_PORT,
        artifacts_destination: Path | None = None,
        log_path: Path | None = None,
        start_timeout: float = 300.0,
    ):
        artifacts = (artifacts_destination or Path.cwd() / "mlartifacts").resolve()
        cmd = [sys.executable, "-m", __name__, "--backend-store-uri", backend_store_uri]
        cmd += ["--port", str(port), "--artifacts-destination", str(artifacts)]
        cmd += ["--parent-pid", str(os.getpid())]  # the server stops when this process is gone
        super().__init__(cmd, port, log_path=log_path, start_timeout=start_timeout)

    def _get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def is_ready(self) -> bool:
        try:
            return self._get("/health")[0] == 200
        except OSError:
            return False

    def experiment_id(self, name: str = EXPERIMENT) -> str | None:
        """The experiment's id from the running server, None when the store has none by that name."""
        query = urllib.parse.urlencode({"experiment_name": name})
        status, body = self._get(f"/api/2.0/mlflow/experiments/get-by-name?{query}")
        return json.loads(body)["experiment"]["experiment_id"] if status == 200 else None


def _say(line: str) -> None:
    print(line, flush=True)  # at once, also when piped (make, a test)


def launch(
    backend_store_uri: str,
    port: int = DEFAULT_PORT,
    artifacts_destination: Path | None = None,
    out: Callable[[str], None] = _say,
) -> int:
    """Start the UI, print where to look, serve until Ctrl-C / SIGTERM / SIGHUP, then stop
    the whole process group. Returns the exit code (0 when stopped by a signal).

    Only the first stop signal counts (``procs.stop_signals_raise``): make forwards the SIGTERM
    its process group just got, and a second one must not cut the server's stop short. A
    launcher killed outright (SIGKILL) takes its server with it: the server watches it."""
    with stop_signals_raise():  # SIGINT too: a shell's `&` ignores it
        server = MlflowUI(backend_store_uri, port, artifacts_destination)
        return _serve_until_stopped(server, backend_store_uri, out)


def _serve_until_stopped(server: MlflowUI, backend_store_uri: str, out: Callable[[str], None]) -> int:
    if port_open(server.port):  # else the readiness check could take another server for this one
        out(f"MLflow UI: {server.url} is taken (another MLflow UI?); stop it or pass --port")
        return 1
    started = time.monotonic()
    out(f"MLflow UI: starting on {server.url} (store {backend_store_uri}) ...")
    server.on_wait(lambda: out(f"  still starting ({time.monotonic() - started:.0f} s)"), every=15.0)
    try:
        server.start()
        proc = server.proc
        assert proc is not None  # start() spawned it
        experiment_id = server.experiment_id()
        out(f"MLflow UI ready in {time.monotonic() - started:.1f} s; Ctrl-C stops it.")
        if experiment_id is None:
            out(f"  no '{EXPERIMENT}' experiment in this store yet (make run creates it): {server.url}")
        else:
            out(f"  experiment '{EXPERIMENT}' (classic ML view): {experiment_url(server.url, experiment_id)}")
            out(f"  registered model '{EXPERIMENT}' (alias champion): {model_url(server.url, EXPERIMENT)}")
        while proc.poll() is None:
            time.sleep(0.5)
        out(f"MLflow UI exited by itself with {proc.returncode}")
        return proc.returncode or 1
    except (RuntimeError, TimeoutError) as err:  # it died or never answered: say why
        out(f"MLflow UI did not start: {err}")
        return 1
    except (KeyboardInterrupt, Stopped):
        return 0
    finally:
        gone = server.stop()
        if gone:
            out("MLflow UI stopped.")
        else:
            assert server.proc is not None  # stop() reports no process as gone
            out(f"MLflow UI: process group {server.proc.pid} still alive")


# --- the server process -------------------------------------------------------------


def browser_defaults(app: ASGIApp) -> PageRewrite:
    """MLflow's app with index.html (GET /) carrying :data:`UI_SCRIPT` and :data:`UI_STYLE` at the
    top of <head>."""
    return PageRewrite(
        app, lambda page: page.replace(b"<head>", b"<head>" + UI_SCRIPT + UI_STYLE, 1), "/".__eq__
    )


def serve(backend_store_uri: str, port: int, artifacts_destination: Path, host: str = HOST) -> None:
    """Run MLflow's tracking server (REST API + UI) in this process until SIGINT/SIGTERM.

    What ``mlflow server`` does before it spawns its workers, minus the workers: the
    server's environment (names from ``mlflow.server.constants``), the stores initialised
    (an empty store gets its tables), then MLflow's FastAPI app in one uvicorn."""
    import warnings

    os.environ.update(SERVER_ENV)
    # MLflow's FastAPI app imports starlette.middleware.wsgi, which warns on import (a UserWarning).
    warnings.filterwarnings("ignore", message=r"starlette\.middleware\.wsgi is deprecated")
    import uvicorn  # before mlflow.server: its Flask app turns its security middleware on under uvicorn
    from mlflow.environment_variables import _MLFLOW_IN_JOB_EXECUTOR, _MLFLOW_SERVER_BOOT_ID, _MLFLOW_SGI_NAME
    from mlflow.server import constants
    from mlflow.server.handlers import initialize_backend_stores
    from mlflow.utils.server_cli_utils import resolve_default_artifact_root

    # mlflow annotates default_artifact_root as str; None (no --default-artifact-root) is what its CLI passes.
    default_artifact_root = resolve_default_artifact_root(True, None, backend_store_uri)  # type: ignore[arg-type]
    os.environ.update(
        {
            constants.BACKEND_STORE_URI_ENV_VAR: backend_store_uri,
            constants.REGISTRY_STORE_URI_ENV_VAR: backend_store_uri,
            constants.ARTIFACT_ROOT_ENV_VAR: default_artifact_root,
            constants.SERVE_ARTIFACTS_ENV_VAR: "true",
            constants.ARTIFACTS_DESTINATION_ENV_VAR: str(artifacts_destination),
            _MLFLOW_SERVER_BOOT_ID.name: uuid.uuid4().hex,
            _MLFLOW_IN_JOB_EXECUTOR.name: "false",
            _MLFLOW_SGI_NAME.name: "uvicorn",
        }
    )
    initialize_backend_stores(backend_store_uri, backend_store_uri, default_artifact_root)
    from mlflow.server.fastapi_app import app

    uvicorn.run(
        browser_defaults(app),
        host=host,
        port=port,
        log_level="warning",  # the launcher prints the URL; no access log in the terminal
        timeout_graceful_shutdown=3,
    )


def stop_with_parent(parent_pid: int, every: float = 0.5) -> threading.Thread:
    """A daemon thread that sends this process SIGTERM (uvicorn's graceful stop) once
    ``parent_pid`` is no longer its parent: the launcher died without stopping it (SIGKILL,
    a crash), and nobody else would."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(every)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="stop-with-parent", daemon=True)
    thread.start()
    return thread


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}", description=serve.__doc__)
    parser.add_argument("--backend-store-uri", default=default_store())
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--artifacts-destination", type=Path, default=Path("mlartifacts"))
    parser.add_argument("--parent-pid", type=int, default=None, help="stop when this process is gone")
    args = parser.parse_args(argv)
    if args.parent_pid is not None:
        stop_with_parent(args.parent_pid)
    serve(args.backend_store_uri, args.port, args.artifacts_destination.resolve(), args.host)


if __name__ == "__main__":  # pragma: no cover
    main()
