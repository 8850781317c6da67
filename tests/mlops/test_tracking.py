"""MLflow wiring: every stage lands in the project's store with artifacts next to it,
wherever it runs from; logs stay free of per-file progress bars; runs carry lineage."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from nextbuy.mlops import tracking
from tests.conftest import ROOT

ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_ARTIFACT_ROOT",
    tracking.PROGRESS_BAR_ENV,
    "AIRFLOW_CTX_DAG_RUN_ID",
)


@pytest.fixture
def clean_env(monkeypatch):
    """No MLflow / Airflow variables from the caller; all put back afterwards."""
    for key in ENV:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


@pytest.fixture
def project(tmp_path, clean_env):
    """A project root with its own store; this process's MLflow state is restored after."""
    import mlflow
    from mlflow.tracking import fluent

    saved_uri = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    saved_experiment = getattr(fluent, "_active_experiment_id", None)
    root = tmp_path / "project"
    root.mkdir()
    yield root
    if mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(saved_uri)
    if hasattr(fluent, "_active_experiment_id"):
        fluent._active_experiment_id = saved_experiment


def test_tracking_uri_is_the_project_sqlite_file_unless_overridden(tmp_path, clean_env):
    assert tracking.tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri(tmp_path) == "http://127.0.0.1:5000"


def test_configure_puts_runs_and_artifacts_in_the_project_wherever_it_runs(project, tmp_path, clean_env):
    import mlflow

    experiment_id = tracking.configure(project)
    assert mlflow.get_tracking_uri() == f"sqlite:///{project.resolve() / 'mlflow.db'}"
    assert (project / "mlflow.db").exists()
    experiment = mlflow.get_experiment(experiment_id)
    assert experiment.name == tracking.EXPERIMENT
    assert experiment.artifact_location == (project.resolve() / "mlartifacts").as_uri()

    # A task running from another directory (Airflow, a shell elsewhere) logs to the same place.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "note.txt").write_text("hello")
    clean_env.chdir(elsewhere)
    assert tracking.configure(project) == experiment_id  # found again, not created twice
    with mlflow.start_run() as run:
        mlflow.log_artifact("note.txt")
    assert run.info.experiment_id == experiment_id
    assert list((project / "mlartifacts").rglob("note.txt"))
    assert not (elsewhere / "mlartifacts").exists()
    assert not (elsewhere / "mlruns").exists()


def test_artifact_root_can_be_overridden(project, tmp_path, clean_env):
    import mlflow

    bucket = (tmp_path / "bucket").as_uri()
    clean_env.setenv("MLFLOW_ARTIFACT_ROOT", bucket)
    assert mlflow.get_experiment(tracking.configure(project)).artifact_location == bucket


@pytest.mark.parametrize(("user_setting", "bars"), [(None, False), ("true", True)])
def test_artifact_downloads_draw_no_progress_bars_unless_asked(project, clean_env, capfd, user_setting, bars):
    import mlflow
    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

    if user_setting is not None:
        clean_env.setenv(tracking.PROGRESS_BAR_ENV, user_setting)
    clean_env.chdir(project)
    tracking.configure(project)
    assert MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.get() is bars  # a user's own setting is left alone
    for name in ("a.txt", "b.txt"):
        (project / name).write_text(name)
    with mlflow.start_run() as run:
        mlflow.log_artifact("a.txt", "files")
        mlflow.log_artifact("b.txt", "files")
    capfd.readouterr()
    mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="files", dst_path=str(project / "out")
    )
    logged = capfd.readouterr()
    assert sorted(p.name for p in (project / "out").rglob("*.txt")) == ["a.txt", "b.txt"]
    assert ("Downloading artifacts" in logged.err + logged.out) is bars


def test_lineage_ties_a_run_to_the_commit_and_the_airflow_run(clean_env):
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("the checkout is not a git repository")
    assert tracking.lineage_tags(ROOT) == {"git_commit": head.stdout.strip()}
    clean_env.setenv("AIRFLOW_CTX_DAG_RUN_ID", "scheduled__2026-03-01T00:00:00+00:00")
    assert tracking.lineage_tags(ROOT) == {
        "git_commit": head.stdout.strip(),
        "airflow_run_id": "scheduled__2026-03-01T00:00:00+00:00",
    }


def test_commit_outside_a_git_checkout_is_unknown(tmp_path, clean_env):
    clean_env.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert tracking.git_commit(tmp_path) == "unknown"
    assert tracking.git_commit(Path(tmp_path / "missing")) == "unknown"


def test_a_run_stopped_by_sigterm_ends_killed_and_any_other_failure_failed(project):
    import signal

    from mlflow.tracking import MlflowClient

    from nextbuy.procs import Stopped

    tracking.configure(project)
    with pytest.raises(Stopped), tracking.stage_run("deploy") as stopped:
        raise Stopped(signal.SIGTERM)
    with pytest.raises(ValueError, match="bad input"), tracking.stage_run("deploy") as failed:
        raise ValueError("bad input")
    client = MlflowClient()
    assert client.get_run(stopped.info.run_id).info.status == "KILLED"
    assert client.get_run(failed.info.run_id).info.status == "FAILED"


@pytest.mark.parametrize("where", ["statement executed", "rows being loaded"])
def test_a_run_stopped_in_the_middle_of_a_registry_query_ends_killed_at_once(project, monkeypatch, where):
    """The stop lands while a SELECT of the store is open (its statement keeps a read lock on
    the SQLite file): ending the run KILLED does not wait for that lock, nor fail on it."""
    import signal
    import time

    from mlflow.tracking import MlflowClient
    from sqlalchemy import event
    from sqlalchemy.orm import loading

    from nextbuy.procs import Stopped

    tracking.configure(project)
    client = MlflowClient()
    client.create_registered_model("nextbuy-test")
    armed: list[bool] = []  # armed once the run has started

    def stop_once() -> None:
        if armed:
            armed.clear()
            raise Stopped(signal.SIGTERM)

    def stop_after_a_select(_conn, _cursor, statement, *_):
        if statement.lstrip().upper().startswith("SELECT"):
            stop_once()

    def load_rows_stopped(*args, **kwargs):
        stop_once()
        return load_rows(*args, **kwargs)

    def deploy_stopped_in_a_query(runs: list) -> None:
        with tracking.stage_run("deploy") as run:
            runs.append(run)
            armed.append(True)
            client.get_registered_model("nextbuy-test")

    engine = client._get_registry_client().store.engine
    load_rows = loading._instance_processor
    if where == "statement executed":
        event.listen(engine, "after_cursor_execute", stop_after_a_select)
    else:  # SQLAlchemy building its row loaders, the cursor open in their closures
        monkeypatch.setattr(loading, "_instance_processor", load_rows_stopped)
    try:
        started, runs = time.monotonic(), []
        with pytest.raises(Stopped):
            deploy_stopped_in_a_query(runs)
        took = time.monotonic() - started
    finally:
        if event.contains(engine, "after_cursor_execute", stop_after_a_select):
            event.remove(engine, "after_cursor_execute", stop_after_a_select)
    assert armed == []  # the stop landed in the query
    assert client.get_run(runs[0].info.run_id).info.status == "KILLED"
    assert took < 5  # SQLite's busy timeout (20 s in MLflow's sessions) never waited on


def test_a_store_larger_than_the_file_size_limit_is_refused_before_any_write(tmp_path):
    """SQLite would fail half-way through a commit and leave a journal it cannot roll back."""
    import sys

    db = tmp_path / "mlflow.db"
    db.write_bytes(bytes(8192))
    script = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from nextbuy.mlops import tracking\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "tracking.check_store_room(Path(sys.argv[1]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(db)], capture_output=True, text=True)
    assert done.returncode != 0
    assert f"[Errno 27] File too large: '{db}'" in done.stderr
    assert db.read_bytes() == bytes(8192)
