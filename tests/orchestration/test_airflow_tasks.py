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
    assert command.index("nextbuy check-dvc-lock && ") < command.index("dvc repro")
    assert "nextbuy restore-outputs label_delay; " in command
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


def _run_stage_command(tmp_path: Path, stage_script: str) -> int:
    """The stage command of stage 'train', with a stand-in dvc (running ``stage_script`` as the
    stage) and nextbuy (check-dvc-lock, restore-outputs: nothing to do) first on PATH; its exit status."""
    import os
    import subprocess

    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "dvc").write_text(f"#!/bin/bash\n( {stage_script} ) || exit 255\n")  # dvc hides the code
    (bin_dir / "nextbuy").write_text("#!/bin/bash\nexit 0\n")
    for tool in ("dvc", "nextbuy"):
        (bin_dir / tool).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env.pop("NEXTBUY_VENV", None)
    command = airflow_tasks.stage_command("train", tmp_path)
    return subprocess.run(["bash", "-c", command], env=env, cwd=tmp_path, timeout=30).returncode


def test_a_stage_that_wrote_an_input_error_exits_with_the_no_retry_code(tmp_path):
    from nextbuy.constants import FAILURE_FILE_ENV, INPUT_ERROR_EXIT_CODE

    refused = f'echo "train: invalid section" > "${FAILURE_FILE_ENV}"; exit 2'
    assert _run_stage_command(tmp_path / "refused", refused) == INPUT_ERROR_EXIT_CODE
    assert _run_stage_command(tmp_path / "crashed", "exit 1") == 255  # transient: keeps its retries
    assert _run_stage_command(tmp_path / "fine", "true") == 0
