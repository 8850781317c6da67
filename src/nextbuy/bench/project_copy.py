"""A fresh git checkout of the project's working tree, without run-time outputs, stores
or caches: where the end-to-end tests and ``nextbuy bench dag`` run the pipeline.
Standard library and PyYAML only."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import yaml

from nextbuy.orchestration.names import BACKUP_FILE
from nextbuy.procs import venv_env

# Run-time outputs and stores, skipped at the top level only (src/nextbuy/data is code,
# /data is pipeline output).
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
    BACKUP_FILE,
    "recommendations",
    "test-artifacts",
}
EVERYWHERE = shutil.ignore_patterns("__pycache__", "*.egg-info", "cache", "tmp")


def copy_project(root: Path, dest: Path, params: dict) -> Path:
    """``root``'s working tree at ``dest`` as a one-commit git repo, ``params`` as params.yaml.

    In a git checkout, the files git tracks or would add (``git ls-files``: what .gitignore
    ignores stays behind, so neither the checkout's stores and outputs, such as its Evidently
    workspace, nor tool caches and built artefacts reach the copy); elsewhere the whole tree
    less the run-time outputs above."""
    files = _working_tree_files(root)
    if files is None:
        shutil.copytree(root, dest, ignore=_ignored_outputs(root))
    else:
        for name in files:
            source, target = root / name, dest / name
            if _is_output(Path(name)) or not source.is_file():  # is_file: listed but deleted
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.email=copy@example.com", "-c", "user.name=nextbuy", "commit", "-qm", "copy"],
    ):
        subprocess.run(cmd, cwd=dest, check=True)
    return dest


def _working_tree_files(root: Path) -> list[str] | None:
    """Paths (relative to ``root``) git tracks or would add; None where ``root`` is no git checkout."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return [name for name in listed.stdout.decode().split("\0") if name]


def _is_output(relative: Path) -> bool:
    parts = relative.parts
    return parts[0] in TOP_LEVEL_OUTPUTS or bool(EVERYWHERE("", list(parts)))


def _ignored_outputs(root: Path) -> Callable[[str, list[str]], set[str]]:
    """``copytree``'s ignore for :func:`_is_output`."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        return {name for name in names if _is_output(Path(directory, name).relative_to(root))}

    return ignore


def project_env(root: Path) -> dict[str, str]:
    """This process's environment for commands run in the copy at ``root``: this venv's bin
    first on PATH, the copy's own MLflow store, no inherited artifact root."""
    env = venv_env()
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    env.pop("MLFLOW_ARTIFACT_ROOT", None)
    return env
