"""dvc.yaml is the one list of stages: the CLI and the DAGs derive theirs from it."""

from __future__ import annotations

import subprocess
import sys

import yaml
from typer.main import get_command

from nextbuy import stage_list
from nextbuy.orchestration.names import MONITORING, TRAINING
from tests.conftest import ROOT

DECLARED = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_stages_are_dvc_yaml_in_file_order():
    stages = stage_list.stages(ROOT)
    assert [s.name for s in stages] == list(DECLARED)
    assert [s.desc for s in stages] == [spec["desc"] for spec in DECLARED.values()]
    assert [s.command for s in stages] == [spec["cmd"].removeprefix("nextbuy ") for spec in DECLARED.values()]


def test_dag_stage_lists_follow_meta_dag():
    for dag in (TRAINING, MONITORING):
        expected = tuple(name for name, spec in DECLARED.items() if spec["meta"]["dag"] == dag)
        assert stage_list.dag_stages(ROOT, dag) == expected
    both = stage_list.dag_stages(ROOT, TRAINING) + stage_list.dag_stages(ROOT, MONITORING)
    assert sorted(both) == sorted(DECLARED)


def test_cli_has_one_command_per_stage():
    from nextbuy import cli

    commands = get_command(cli.app).commands
    for name, spec in DECLARED.items():
        command = commands[spec["cmd"].removeprefix("nextbuy ")]
        assert command.help == spec["desc"], name
    assert list(cli.STAGES) == list(DECLARED)


def test_dvc_yaml_is_found_here_else_next_to_the_package(tmp_path):
    assert stage_list.find_project(ROOT) == ROOT
    assert stage_list.find_project(tmp_path) == stage_list.PACKAGE_PROJECT == ROOT


def test_without_dvc_yaml_the_stage_modules_present(tmp_path, monkeypatch):
    monkeypatch.setattr(stage_list, "PACKAGE_PROJECT", tmp_path / "installed")
    assert stage_list.find_project(tmp_path) is None
    fallback = stage_list.available(tmp_path)
    assert sorted(s.name for s in fallback) == sorted(DECLARED)
    assert all(s.desc == stage_list.GENERIC_HELP.format(name=s.name) and s.dag is None for s in fallback)


def test_the_cli_starts_without_the_ml_stack():
    heavy = ("torch", "pandas", "numpy", "mlflow", "sklearn")
    code = f"import sys\nimport nextbuy.cli\nprint(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
