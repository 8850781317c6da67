"""The Airflow workspace: a git worktree of the project in which both DAGs run the stages.

Why not the checkout itself: every Airflow run has run-only params (its snapshot, the
trigger form's overrides). Run in the checkout, ``dvc.lock`` would record them while
``params.yaml`` came back afterwards, so ``dvc status`` would disagree and the next
``make run`` would retrain everything. So Airflow never touches the checkout:

* ``.airflow/workspace`` is a git worktree of the project (created on the first run),
  moved to the checkout's HEAD commit at the start of each run: Airflow runs the
  committed code with the checkout's ``params.yaml`` plus the run's overrides;
* it shares the checkout's DVC cache, MLflow store (registry, champion) and Evidently
  workspace, so releases and dashboards are the same for both;
* every finished run is saved as a DVC experiment named after the run
  (``dvc exp show`` / ``dvc exp list`` in the checkout; ``dvc exp apply NAME`` to
  bring one into the checkout).

Standard library only (DAG files import this when Airflow parses them).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from nextbuy.files import atomic_write_text

log = logging.getLogger(__name__)

WORKSPACE = Path(".airflow") / "workspace"  # relative to the project (git- and dvc-ignored)
SHARED_DIRS = ("monitoring/workspace",)  # symlinked to the checkout's (the Evidently workspace)
SAVED_OUTPUTS = ("metrics", "plots")  # git-ignored run outputs an experiment keeps


def workspace_dir(project: Path) -> Path:
    return Path(project) / WORKSPACE


def _git(*args: str, cwd: Path) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} (in {cwd}) failed:\n{out.stderr.strip()}")
    return out.stdout.strip()


def ensure(project: Path) -> Path:
    """The worktree, created on first use, wired to the checkout's DVC cache and Evidently workspace."""
    project = Path(project).resolve()
    ws = workspace_dir(project)
    if not (ws / ".git").exists():
        _git("worktree", "prune", cwd=project)
        ws.parent.mkdir(parents=True, exist_ok=True)
        _git("worktree", "add", "--detach", str(ws), "HEAD", cwd=project)
        log.info("created the Airflow workspace %s (a git worktree of %s)", ws, project)
    cache = project / ".dvc" / "cache"
    atomic_write_text(ws / ".dvc" / "config.local", f"[cache]\n    dir = {cache}\n")
    for shared in SHARED_DIRS:
        target, link = project / shared, ws / shared
        target.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target, target_is_directory=True)
    return ws


def sync_code(project: Path, ws: Path) -> str:
    """Move the worktree to the checkout's HEAD commit (tracked files only: outputs,
    dvc.lock and the DVC cache link stay). Returns the commit."""
    commit = _git("rev-parse", "HEAD", cwd=project)
    _git("checkout", "--detach", "--force", commit, cwd=ws)
    return commit


def store_defaults(project: Path) -> dict[str, str]:
    """The checkout's MLflow store, for a stage in the worktree unless the variable is set
    (the docker stack's server)."""
    project = Path(project).resolve()
    return {
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
        "MLFLOW_ARTIFACT_ROOT": (project / "mlartifacts").as_uri(),
    }


def stage_env(project: Path) -> dict[str, str]:
    """What a stage in the worktree needs: the worktree's code first on the path, and the
    MLflow store (``store_defaults`` unless set)."""
    defaults = {key: os.environ.get(key) or value for key, value in store_defaults(project).items()}
    return {"PYTHONPATH": str(workspace_dir(Path(project).resolve()) / "src"), **defaults}


def experiment_name(dag_id: str, run_id: str) -> str:
    """A git-ref-safe experiment name for a DAG run (``manual__2026-11-22T10:00:00+00:00``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{dag_id}-{run_id}").strip("-.")


def save_experiment(ws: Path, name: str, env: dict[str, str] | None, stages: Sequence[str] = ()) -> str:
    """``dvc exp save``: the run's params, dvc.lock, metrics and plots as an experiment.
    ``stages``: the ones the run ran (the others' outputs may not exist in the workspace yet)."""
    includes = [arg for d in SAVED_OUTPUTS if (ws / d).exists() for arg in ("-I", d)]
    out = subprocess.run(
        ["dvc", "exp", "save", "--force", "-n", name, *includes, *stages],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    text = (out.stdout + out.stderr).strip()
    if out.returncode != 0:
        raise RuntimeError(f"dvc exp save exited {out.returncode}:\n{text}")
    return text
