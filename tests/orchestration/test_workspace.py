"""The Airflow workspace: a git worktree of the project that shares its DVC cache and
Evidently workspace, follows its HEAD, and saves each run as a DVC experiment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nextbuy.orchestration import workspace


def _run(*cmd: str, cwd: Path) -> str:
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout


def _git_project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / "params.yaml").write_text("train:\n  epochs: 1\n")
    (project / ".gitignore").write_text("/.airflow/\nmetrics/\nmonitoring/workspace\n")
    _run("git", "init", "-q", cwd=project)
    _run("git", "add", "-A", cwd=project)
    _run("git", "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qm", "init", cwd=project)
    return project


def test_the_workspace_is_a_worktree_sharing_cache_and_dashboards(tmp_path):
    project = _git_project(tmp_path)
    ws = workspace.ensure(project)
    assert ws == project.resolve() / ".airflow" / "workspace"
    assert (ws / "params.yaml").read_text() == "train:\n  epochs: 1\n"
    assert str(project.resolve() / ".dvc" / "cache") in (ws / ".dvc" / "config.local").read_text()
    assert (ws / "monitoring" / "workspace").resolve() == project.resolve() / "monitoring" / "workspace"
    assert workspace.ensure(project) == ws  # idempotent
    assert _run("git", "status", "--porcelain", cwd=project) == ""  # the checkout is untouched


def test_sync_code_follows_the_checkout_head_and_keeps_outputs(tmp_path):
    project = _git_project(tmp_path)
    ws = workspace.ensure(project)
    (ws / "metrics").mkdir()
    (ws / "metrics" / "train.json").write_text("{}")
    (project / "params.yaml").write_text("train:\n  epochs: 2\n")
    _run("git", "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qam", "two", cwd=project)
    commit = workspace.sync_code(project, ws)
    assert commit == _run("git", "rev-parse", "HEAD", cwd=project).strip()
    assert (ws / "params.yaml").read_text() == "train:\n  epochs: 2\n"
    assert (ws / "metrics" / "train.json").exists()


@pytest.mark.parametrize(
    ("run_id", "name"),
    [
        ("manual__2026-11-22T10:00:00+00:00", "nextbuy_training-manual__2026-11-22T10-00-00-00-00"),
        ("scheduled__2026-11-22T00:00:00+00:00", "nextbuy_training-scheduled__2026-11-22T00-00-00-00-00"),
    ],
)
def test_experiment_names_are_git_ref_safe(run_id, name):
    assert workspace.experiment_name("nextbuy_training", run_id) == name


def test_a_saved_run_is_listed_in_the_checkout(tmp_path):
    project = _git_project(tmp_path)
    dvc = str(Path(sys.executable).parent / "dvc")
    _run(dvc, "init", "-q", cwd=project)
    _run("git", "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qam", "dvc", cwd=project)
    ws = workspace.ensure(project)
    workspace.sync_code(project, ws)
    (ws / "metrics").mkdir()
    (ws / "metrics" / "train.json").write_text('{"auc": 0.7}')
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    workspace.save_experiment(ws, "nextbuy_training-r1", env=env)
    assert "nextbuy_training-r1" in _run(dvc, "exp", "list", cwd=project)
    assert _run("git", "status", "--porcelain", cwd=project) == ""
