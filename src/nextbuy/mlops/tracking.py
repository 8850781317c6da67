"""MLflow wiring: where the tracking store and artifacts live, and run lineage tags.

Default: a SQLite file ``mlflow.db`` and an ``mlartifacts/`` folder at the
project root, so every stage (run by DVC, Airflow or by hand) lands in the
same registry. ``MLFLOW_TRACKING_URI`` overrides it (e.g. the docker stack's
server).

Runs killed mid-way (kill -9, OOM) would stay RUNNING forever: every run this
process starts after :func:`configure` carries the process's pid and host as tags,
and :func:`configure` ends the experiment's RUNNING runs whose process is gone
from this host as KILLED; a run this process is told to stop (SIGTERM, Ctrl-C) ends KILLED
at once (:func:`stage_run`), also when the stop lands in the middle of a query of the store.

A store MLflow cannot write (a file-size limit below the size of ``mlflow.db``) is refused
before anything is written to it (:func:`configure`), and a failed write that left a hot
``mlflow.db-journal`` is rolled back at once (:func:`settle_store`): the store keeps its last
committed state.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

from nextbuy.procs import Stopped, release_interrupted

log = logging.getLogger(__name__)

EXPERIMENT = "nextbuy"
# MLflow draws a tqdm bar per downloaded artifact file by default: fine on a
# terminal, a wall of carriage-return lines in `make run` output and Airflow task
# logs. Off unless the user sets the variable.
PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
# Tags MLflow adds to every run mlflow.start_run creates in this process (a JSON object).
RUN_CONTEXT_ENV = "MLFLOW_RUN_CONTEXT"
PID_TAG, HOST_TAG = "nextbuy.pid", "nextbuy.host"


def tracking_uri(root: Path | None = None) -> str:
    root = (root or Path.cwd()).resolve()
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"


def sqlite_store(uri: str | None = None) -> Path | None:
    """The SQLite file of the tracking store (``uri``, default: this project's), None for any other store."""
    uri = uri or tracking_uri()
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def check_store_room(db: Path | None) -> None:
    """Raise EFBIG naming ``db`` when the process's file-size limit (``ulimit -f``) is at or
    below its size: SQLite would fail half-way through a commit and leave a hot journal it
    could not roll back under that limit."""
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, OSError, ValueError):
        return
    if db is not None and limit != resource.RLIM_INFINITY and db.exists() and db.stat().st_size >= limit:
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG), str(db))


def settle_store(db: Path | None) -> bool:
    """Roll back what a failed write left in SQLite file ``db`` (a hot ``-journal``): opening it
    and reading does. True when no journal is left."""
    if db is None:
        return True
    journal = db.with_name(db.name + "-journal")
    if not journal.exists():
        return True
    with contextlib.suppress(sqlite3.Error):
        connection = sqlite3.connect(db, timeout=10)
        try:
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            connection.close()
    return not journal.exists()


@contextlib.contextmanager
def stage_run(run_name: str) -> Iterator:
    """``mlflow.start_run``; a stop signal inside (``procs.Stopped``, KeyboardInterrupt) ends the
    run KILLED, any other failure FAILED (as MLflow does)."""
    import mlflow
    from mlflow.entities import RunStatus

    with mlflow.start_run(run_name=run_name) as run:
        try:
            yield run
        except (Stopped, KeyboardInterrupt) as err:
            # Stopped half-way through a query, its open statement keeps a read lock on the
            # SQLite store: every write below would wait for it, then fail "database is locked".
            release_interrupted(err)
            mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
            raise


def configure(root: Path | None = None) -> str:
    """Point MLflow at the project store and return the experiment id.

    Also turns MLflow's per-file artifact progress bars off unless
    ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` is already set (logs stay readable), tags
    this process's future runs with its pid and host, and ends dead runs as KILLED."""
    import mlflow

    os.environ.setdefault(PROGRESS_BAR_ENV, "false")
    root = (root or Path.cwd()).resolve()
    check_store_room(sqlite_store(tracking_uri(root)))
    mlflow.set_tracking_uri(tracking_uri(root))
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        # Artifacts next to the store, not relative to whatever directory a task runs in.
        artifacts = os.environ.get("MLFLOW_ARTIFACT_ROOT") or (root / "mlartifacts").as_uri()
        experiment_id = mlflow.create_experiment(EXPERIMENT, artifact_location=artifacts)
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(EXPERIMENT)
    tag_runs_with_this_process()
    end_dead_runs(experiment_id)
    return experiment_id


def process_tags() -> dict[str, str]:
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def tag_runs_with_this_process() -> None:
    """Every run ``mlflow.start_run`` creates from now on carries this process's pid and host."""
    try:
        context = json.loads(os.environ.get(RUN_CONTEXT_ENV) or "{}")
    except json.JSONDecodeError:
        context = {}
    context = context if isinstance(context, dict) else {}
    os.environ[RUN_CONTEXT_ENV] = json.dumps({**context, **process_tags()})


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a process id we recorded: leave the run alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return True
    # A killed process stays a zombie until its parent (or init) reaps it: dead all the same.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _dead(tags: dict[str, str], host: str) -> bool:
    """Started on this host by a process that is gone (runs without the tags: never)."""
    if tags.get(HOST_TAG) != host or not str(tags.get(PID_TAG, "")).isdigit():
        return False
    return not pid_alive(int(tags[PID_TAG]))


def end_dead_runs(experiment_id: str) -> list[str]:
    """End the experiment's RUNNING runs whose process died on this host as KILLED; their ids."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        running = client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=1000)
        dead = [r.info.run_id for r in running if _dead(r.data.tags, socket.gethostname())]
        for run_id in dead:
            client.set_terminated(run_id, "KILLED")
    except MlflowException as err:  # a store hiccup must not stop the stage
        log.warning("could not end dead MLflow runs: %s", err)
        return []
    if dead:
        log.warning("MLflow runs of dead processes ended as KILLED: %s", ", ".join(dead))
    return dead


def git_commit(root: Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root or Path.cwd(),
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def lineage_tags(root: Path | None = None) -> dict[str, str]:
    """Tags that tie an MLflow run to the code and orchestration that produced it."""
    tags = {"git_commit": git_commit(root)}
    if os.environ.get("AIRFLOW_CTX_DAG_RUN_ID"):
        tags["airflow_run_id"] = os.environ["AIRFLOW_CTX_DAG_RUN_ID"]
    return tags
