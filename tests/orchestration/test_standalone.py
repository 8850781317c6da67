"""``nextbuy airflow standalone|restore-params``: the environment it gives Airflow, a
port already taken, and the CLI commands (Airflow itself is not started here)."""

from __future__ import annotations

import socket

from typer.testing import CliRunner

from nextbuy import procs
from nextbuy.cli import app
from nextbuy.orchestration import params_lock, standalone
from nextbuy.orchestration.names import BACKUP_FILE, PROJECT_DIR_ENV
from nextbuy.orchestration.workspace import workspace_dir
from tests.conftest import ROOT


def test_airflow_env_points_at_the_project_on_localhost(tmp_path, monkeypatch):
    monkeypatch.delenv("AIRFLOW_HOME", raising=False)
    env = standalone.airflow_env(tmp_path, 8123)
    assert env["AIRFLOW_HOME"] == str(tmp_path / ".airflow")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(tmp_path / "dags")
    assert (env["AIRFLOW__API__HOST"], env["AIRFLOW__API__PORT"]) == ("127.0.0.1", "8123")
    assert env[PROJECT_DIR_ENV] == str(tmp_path)
    log_ports = [int(env[key]) for key in standalone.LOG_SERVER_PORTS]
    assert len(set(log_ports)) == 2


def test_a_taken_port_is_refused_before_anything_starts(tmp_path, capsys):
    with socket.socket() as listener:
        listener.bind((procs.HOST, 0))
        listener.listen()
        assert standalone.standalone(tmp_path, listener.getsockname()[1]) == 1
    assert "in use" in capsys.readouterr().err
    assert not (tmp_path / ".airflow").exists()


def test_cli_has_the_airflow_commands():
    result = CliRunner().invoke(app, ["airflow", "--help"])
    assert result.exit_code == 0
    assert "standalone" in result.output
    assert "restore-params" in result.output


def test_cli_restore_params_puts_back_a_dead_runs_backup(tmp_path, monkeypatch):
    original = (ROOT / "params.yaml").read_text()
    ws = workspace_dir(tmp_path)  # where Airflow runs hold their params (a worktree in real use)
    ws.mkdir(parents=True)
    (ws / "params.yaml").write_text(original)
    dead = {"dag_id": "d", "run_id": "dead"}
    params_lock.acquire_params(ws, dead, {"train.epochs": 99}, lambda o: True)
    monkeypatch.setenv(PROJECT_DIR_ENV, str(tmp_path))
    result = CliRunner().invoke(app, ["airflow", "restore-params"])
    assert result.exit_code == 0, result.output
    assert (ws / "params.yaml").read_text() == original
    assert not (ws / BACKUP_FILE).exists()
