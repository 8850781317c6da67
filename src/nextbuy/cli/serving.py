"""Serving and the UIs: DVC plots offline, the MLflow UI, a registered model's digest check and
REST scoring."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.markup import escape

from nextbuy.cli.common import app, console, model_name_or_default


@app.command()
def plots(
    root: Path = typer.Option(Path("."), help="DVC project root"),
    out: Path = typer.Option(Path("dvc_plots"), help="folder for index.html (relative to --root)"),
) -> None:
    """dvc plots show with Vega inlined (make plots): dvc_plots/index.html needs no network."""
    from nextbuy.mlops.plots import show

    try:
        page = show(root, out)
    except RuntimeError as err:
        console.print(f"[bold red]plots: {escape(str(err))}[/]", highlight=False)
        raise typer.Exit(code=1) from None
    console.print(f"[green]plots[/] → {page} (opens offline)", highlight=False)


def port_taken(port: int, choose: str) -> str:
    """One line: the port is in use, and how to pick another (``choose``: the option or setting)."""
    return f"port {port} on 127.0.0.1 is in use (another server?): stop it or pick a free one with {choose}"


@app.command("port-free")
def port_free(
    port: int = typer.Argument(..., help="port on 127.0.0.1 a server is about to listen on"),
    setting: str = typer.Option(
        "--port", "--setting", help="how the user picks another port (named in the message)"
    ),
) -> None:
    """Exit 0 when nothing listens on 127.0.0.1:PORT, else one line naming the port and how to
    pick another, and exit 2 (the Makefile's UI targets run it before they start a server)."""
    from nextbuy.procs import port_open

    if port_open(port):
        console.print(f"[bold red]{port_taken(port, setting)}[/]", highlight=False)
        raise typer.Exit(code=2)


@app.command("mlflow-ui")
def mlflow_ui(
    backend_store_uri: str | None = typer.Option(
        None, help="tracking store (default: sqlite mlflow.db in the current directory)"
    ),
    port: int = typer.Option(5000, help="UI port on 127.0.0.1"),
) -> None:
    """MLflow UI on the nextbuy experiment's classic ML view (make mlflow-ui): Ctrl-C stops it all."""
    from nextbuy.mlops.mlflow_ui import default_store, launch

    raise typer.Exit(code=launch(backend_store_uri or default_store(), port))


@app.command("verify-model")
def verify_model(
    model: str | None = typer.Argument(
        None, help="registry model URI (default: the champion of deploy.model_name, models:/<name>@champion)"
    ),
) -> None:
    """Check a registered model's files against the SHA-256 deploy recorded on its version,
    loading nothing from them; exit 1 if any file differs or none was recorded."""
    import mlflow

    from nextbuy.mlops import io, tracking
    from nextbuy.release.registry import CHAMPION
    from nextbuy.serving import ARTIFACT_SHA256, verify_model_uri

    model = model or f"models:/{model_name_or_default(None)}@{CHAMPION}"
    os.environ.setdefault(tracking.PROGRESS_BAR_ENV, "false")
    mlflow.set_tracking_uri(tracking.tracking_uri())
    try:
        version, digest = verify_model_uri(model)
    except io.DataError as err:
        console.print(f"[bold red]{escape(err.message)}[/]", highlight=False)
        raise typer.Exit(code=1) from None
    console.print(
        f"[green]{model} (v{version}): every file matches {ARTIFACT_SHA256} {digest}[/]", highlight=False
    )


@app.command()
def serve(
    model: str | None = typer.Option(
        None, help="MLflow model URI (default: the champion of deploy.model_name, models:/<name>@champion)"
    ),
    port: int = typer.Option(5001, help="port on 127.0.0.1"),
    workers: int = typer.Option(1, min=1, help="uvicorn worker processes"),
    fast_path: bool = typer.Option(
        True, help="answer plain pair-scoring requests without MLflow's per-request overhead (same JSON)"
    ),
    params: Path = typer.Option(Path("params.yaml"), help="params file whose `serving` section applies"),
) -> None:
    """REST scoring on 127.0.0.1 (make serve): MLflow's scoring server, behind limits.

    The model's files are checked against the SHA-256 deploy recorded first (exit 1 if one
    differs). POST /invocations as with `mlflow models serve`, but a body over
    NEXTBUY_MAX_BODY_BYTES (default 10 MB) or of more than 100,000 rows gets 413 before MLflow
    reads it; serving.max_concurrent requests are computed at once and serving.max_queue wait,
    the next gets 503 with Retry-After; a request whose client has gone is cancelled; SIGTERM
    gives requests in flight serving.drain_s seconds. Plain dataframe_split pair requests are
    answered by a fast path with the same JSON."""
    import json
    import sys

    from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
    from mlflow.pyfunc import scoring_server
    from mlflow.utils.file_utils import path_to_local_file_uri
    from pydantic import ValidationError

    from nextbuy.config import ServingConfig, read_params, section_config
    from nextbuy.procs import HOST, port_open
    from nextbuy.release.registry import CHAMPION
    from nextbuy.serving import FAST_PATH_ENV, MAX_BODY_BYTES_ENV, SERVING_ENV, max_body_bytes

    if port_open(port):
        console.print(f"[bold red]serve: {port_taken(port, '--port')}[/]", highlight=False)
        raise typer.Exit(code=2)
    try:
        limit = max_body_bytes()
        limits = section_config(read_params(params), ServingConfig)
    except (ValueError, FileNotFoundError, ValidationError) as err:
        console.print(f"[bold red]serve: {escape(str(err))}[/]", highlight=False)
        raise typer.Exit(code=2) from None
    model = model or f"models:/{model_name_or_default(None)}@{CHAMPION}"
    path, which = _checked_local_copy(model)
    url = f"http://{HOST}:{port}"
    console.print(
        f"[green]serving {which}[/] at {url}  (POST /invocations; Ctrl-C stops it)",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"bodies over {limit:,} bytes: 413 before MLflow reads them ({MAX_BODY_BYTES_ENV}); "
        f"{limits.max_concurrent} requests at once per process, {limits.max_queue} waiting, then 503 "
        f"(Retry-After: {limits.retry_after_s}); SIGTERM drains for {limits.drain_s} s ({params}: serving)",
        highlight=False,
        soft_wrap=True,
    )
    env = dict(os.environ)
    env[scoring_server._SERVER_MODEL_PATH] = path_to_local_file_uri(str(path))
    env[FAST_PATH_ENV] = "1" if fast_path else "0"
    env[MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.name] = str(MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get())
    env[SERVING_ENV] = json.dumps(limits.model_dump())
    cmd = [sys.executable, "-m", "uvicorn", "--host", HOST, "--port", str(port)]
    cmd += ["--workers", str(workers), "--timeout-graceful-shutdown", str(limits.drain_s)]
    cmd += ["nextbuy.serving.rest_app:app"]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(cmd[0], cmd, env)  # uvicorn takes this process's place (pid, group, signals)


def _checked_local_copy(model: str) -> tuple[Path, str]:
    """``model`` downloaded once (an alias resolved once) and checked against the digests deploy
    recorded: what is checked is what is served. Like `mlflow models serve`, the copy stays in
    the temp dir. Exit 1 if a file differs."""
    import shutil
    import tempfile

    import mlflow

    from nextbuy.mlops import io, tracking
    from nextbuy.serving import download_checked

    os.environ.setdefault(tracking.PROGRESS_BAR_ENV, "false")
    mlflow.set_tracking_uri(tracking.tracking_uri())
    local = tempfile.mkdtemp(prefix="nextbuy-serve-")
    try:
        path, version, digest = download_checked(model, local)
    except io.DataError as err:
        shutil.rmtree(local, ignore_errors=True)
        console.print(f"[bold red]{escape(err.message)}[/]", highlight=False)
        raise typer.Exit(code=1) from None
    which = f"{model} (v{version})" if version is not None else model
    if digest is None:
        console.print(f"[bold yellow]{which}: files not verified (no recorded digests)[/]", highlight=False)
    return Path(path), which
