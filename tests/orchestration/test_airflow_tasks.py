"""Where and how a stage task runs (the BashOperator itself is checked in tests/dags)."""

from __future__ import annotations

import shlex
from pathlib import Path

from nextbuy.orchestration import airflow_tasks
from nextbuy.orchestration.names import PROJECT_DIR_ENV, VENV_ENV


def test_project_dir_is_the_env_var_else_the_parent_of_dags(tmp_path, monkeypatch):
    dag_file = tmp_path / "proj" / "dags" / "x.py"
    monkeypatch.delenv(PROJECT_DIR_ENV, raising=False)
    assert airflow_tasks.project_dir(dag_file) == (tmp_path / "proj").resolve()
    monkeypatch.setenv(PROJECT_DIR_ENV, str(tmp_path / "elsewhere"))
    assert airflow_tasks.project_dir(dag_file) == (tmp_path / "elsewhere").resolve()


def test_stage_command_is_dvc_repro_of_one_stage_with_the_venv_first(tmp_path, monkeypatch):
    project = tmp_path / "a project"
    monkeypatch.delenv(VENV_ENV, raising=False)
    command = airflow_tasks.stage_command("label_delay", project)
    assert "dvc repro --single-item label_delay || " in command
    assert command.endswith("nextbuy restore-outputs label_delay; exit $status; }; }")
    assert f"export PATH={shlex.quote(str(project / '.venv' / 'bin'))}:" in command
    monkeypatch.setenv(VENV_ENV, "/opt/venv")
    assert airflow_tasks.venv_bin(project) == Path("/opt/venv/bin")
    assert airflow_tasks.project_env(project)["PATH"].startswith("/opt/venv/bin")


def test_stage_chain_follows_dvc_yaml(tmp_path):
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        "  a: {cmd: x, meta: {dag: training}}\n"
        "  m: {cmd: x, meta: {dag: monitoring}}\n"
        "  b: {cmd: x, meta: {dag: training}}\n"
    )
    assert airflow_tasks.stage_chain(tmp_path, "training") == "a -> b"
    assert airflow_tasks.stage_chain(tmp_path, "monitoring") == "m"
