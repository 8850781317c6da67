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


def test_stage_command_is_repro_stage_of_one_stage_with_the_venv_first(tmp_path, monkeypatch):
    project = tmp_path / "a project"
    monkeypatch.delenv(VENV_ENV, raising=False)
    command = airflow_tasks.stage_command("label_delay", project)
    assert "nextbuy repro-stage label_delay || " in command
    assert command.index("nextbuy check-dvc-lock && ") < command.index("nextbuy repro-stage")
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


def _run_stage_command(tmp_path: Path, stage_script: str) -> tuple[int, list[str]]:
    """The stage command of stage 'train', with a stand-in nextbuy first on PATH (its
    repro-stage runs ``stage_script`` as the stage, its other commands do nothing): its exit
    status and the nextbuy commands it ran."""
    import os
    import subprocess

    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    calls = tmp_path / "calls"
    (bin_dir / "nextbuy").write_text(
        f'#!/bin/bash\necho "$@" >> {calls}\n'
        f'if [ "$1" = repro-stage ]; then ( {stage_script} ); exit $?; fi\n'
    )
    (bin_dir / "nextbuy").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env.pop("NEXTBUY_VENV", None)
    command = airflow_tasks.stage_command("train", tmp_path)
    code = subprocess.run(["bash", "-c", command], env=env, cwd=tmp_path, timeout=30).returncode
    return code, calls.read_text().splitlines()


def test_a_stage_task_exits_with_the_stage_code_and_restores_outputs_after_a_failure(tmp_path):
    assert _run_stage_command(tmp_path / "refused", "exit 2") == (
        2,
        ["check-dvc-lock", "repro-stage train", "restore-outputs train"],
    )
    assert _run_stage_command(tmp_path / "fine", "true") == (0, ["check-dvc-lock", "repro-stage train"])


def _dvc_project(tmp_path: Path, commands: dict[str, str]) -> Path:
    import subprocess
    import sys

    import yaml

    stages = {name: {"cmd": cmd} for name, cmd in commands.items()}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    return tmp_path


def test_repro_stage_exits_with_the_stage_command_code_that_dvc_repro_hides(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(_dvc_project(tmp_path, {"refuses": "exit 2", "crashes": "exit 1", "fine": "true"}))
    assert airflow_tasks.repro_stage("refuses") == 2  # dvc repro itself: 255
    assert "failed to reproduce 'refuses'" in capfd.readouterr().err  # DVC's own words still shown
    assert airflow_tasks.repro_stage("crashes") == 1
    assert airflow_tasks.repro_stage("fine") == 0
    assert airflow_tasks.repro_stage("no_such_stage") == 255  # DVC's failure, not a stage's


def test_a_stage_killed_by_a_signal_reports_128_plus_its_number():
    line = "ERROR: failed to reproduce 'train': failed to run: nextbuy train, exited with -15"
    assert airflow_tasks.stage_exit_code(line) == 143
    assert airflow_tasks.stage_exit_code("Running stage 'train':") is None
