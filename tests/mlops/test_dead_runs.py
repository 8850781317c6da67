"""Runs killed mid-way (kill -9) do not stay RUNNING forever: every run a stage starts
after ``tracking.configure`` carries its pid and host, and the next ``configure``
ends the RUNNING runs whose process is gone from this host as KILLED — never a live
process's run, another host's, or one without the tags."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nextbuy.bench.serving_fixtures import mlflow_store
from nextbuy.mlops import tracking


@pytest.fixture
def project(tmp_path, monkeypatch, new_mlflow_store):
    """A project root with its own store; MLflow state and MLFLOW_RUN_CONTEXT put back after."""
    import mlflow

    monkeypatch.setenv(tracking.RUN_CONTEXT_ENV, "{}")
    monkeypatch.delenv(tracking.RUN_CONTEXT_ENV)  # recorded: restored (absent) afterwards
    root = tmp_path / "project"
    root.mkdir()
    with mlflow_store(new_mlflow_store(root / "mlflow.db")):
        yield root
        if mlflow.active_run():
            mlflow.end_run()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def status(run_id: str) -> str:
    from mlflow.tracking import MlflowClient

    return MlflowClient().get_run(run_id).info.status


def test_runs_started_after_configure_carry_the_pid_and_host(project):
    import mlflow

    tracking.configure(project)
    with mlflow.start_run() as run:
        pass
    tags = mlflow.get_run(run.info.run_id).data.tags
    assert tags[tracking.PID_TAG] == str(os.getpid())
    assert tags[tracking.HOST_TAG] == socket.gethostname()


def test_only_runs_of_dead_processes_on_this_host_are_ended_killed(project):
    from mlflow.tracking import MlflowClient

    experiment = tracking.configure(project)
    client = MlflowClient()
    here = socket.gethostname()

    def running(**tags) -> str:
        return client.create_run(experiment, tags=tags).info.run_id

    dead = running(**{tracking.PID_TAG: str(dead_pid()), tracking.HOST_TAG: here})
    alive = running(**{tracking.PID_TAG: str(os.getpid()), tracking.HOST_TAG: here})
    elsewhere = running(**{tracking.PID_TAG: str(dead_pid()), tracking.HOST_TAG: "another-host"})
    untagged = running()
    assert tracking.end_dead_runs(experiment) == [dead]
    assert status(dead) == "KILLED"
    assert [status(r) for r in (alive, elsewhere, untagged)] == ["RUNNING"] * 3
    assert tracking.end_dead_runs(experiment) == []


def test_a_stage_killed_with_sigkill_ends_killed_at_the_next_start(project):
    """The real thing: a process configures, starts a run and is killed -9 inside it."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from pathlib import Path
        import mlflow
        from nextbuy.mlops import tracking
        tracking.configure(Path({str(project)!r}))
        run = mlflow.start_run(run_name="train")
        print(run.info.run_id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    # The stage's own store: no MLflow location inherited from this process's environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    run_id = proc.stdout.split()[-1]
    assert status(run_id) == "RUNNING"
    tracking.configure(project)  # what the next stage does first
    assert status(run_id) == "KILLED"


def test_a_killed_process_not_yet_reaped_counts_as_dead():
    """kill -9 leaves a zombie until its parent reaps it (in containers, seconds): its run
    must still be ended on the next start."""
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert tracking.pid_alive(child.pid)
        child.kill()
        deadline = time.monotonic() + 5
        while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert not tracking.pid_alive(child.pid)  # a zombie: not reaped yet, but dead
    finally:
        child.wait()
