"""Configs from the repo's params.yaml, and a temporary git + DVC copy of the
project to run the pipeline in (the end-to-end and DAG tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from nextbuy.config import read_params, section_config
from tests.conftest import ROOT


def config(dotted: str, **changes):
    """The validated config of a params.yaml section (``train``, ``ingest.simulator``)
    with ``changes`` on top: tests take every other knob from the repo's params.yaml."""
    return section_config(read_params(ROOT / "params.yaml"), dotted, **changes)


# Run-time outputs of the checkout under test, skipped at the top level only
# (src/nextbuy/data is code, /data is pipeline output).
TOP_LEVEL_OUTPUTS = {
    ".venv",
    ".git",
    "data",
    "models",
    "metrics",
    "plots",
    "mlflow.db",
    "mlartifacts",
    "mlruns",
    ".dvcstore",
    "dvc_plots",
    ".airflow",
    "dvc.lock",
    ".pytest_cache",
    ".hypothesis",
    ".airflow-params-backup.yaml",
}
EVERYWHERE = shutil.ignore_patterns("__pycache__", "*.egg-info", "cache", "tmp")


def skip(directory: str, names: list[str]) -> set[str]:
    ignored = set(EVERYWHERE(directory, names))
    if Path(directory) == ROOT:
        ignored |= TOP_LEVEL_OUTPUTS & set(names)
    return ignored


def project_copy(tmp: Path, params: dict) -> Path:
    """A fresh git checkout of the project with ``params`` as params.yaml."""
    dest = tmp / "project"
    shutil.copytree(ROOT, dest, ignore=skip)
    (dest / "params.yaml").write_text(yaml.safe_dump(params))
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qm", "init"],
    ):
        subprocess.run(cmd, cwd=dest, check=True)
    return dest


def project_env(dest: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{dest / 'mlflow.db'}"
    env.pop("MLFLOW_ARTIFACT_ROOT", None)
    return env
