"""MLflow wiring: where the tracking store and artifacts live, and run lineage tags.

Default: a SQLite file ``mlflow.db`` and an ``mlartifacts/`` folder at the
project root, so every stage (run by DVC, Airflow or by hand) lands in the
same registry. ``MLFLOW_TRACKING_URI`` overrides it (e.g. the docker stack's
server).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

EXPERIMENT = "nextbuy"
# MLflow draws a tqdm bar per downloaded artifact file by default: fine on a
# terminal, a wall of carriage-return lines in `make run` output and Airflow task
# logs. Off unless the user sets the variable.
PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def tracking_uri(root: Path | None = None) -> str:
    root = (root or Path.cwd()).resolve()
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"


def configure(root: Path | None = None) -> str:
    """Point MLflow at the project store and return the experiment id.

    Also turns MLflow's per-file artifact progress bars off unless
    ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` is already set (logs stay readable)."""
    import mlflow

    os.environ.setdefault(PROGRESS_BAR_ENV, "false")
    root = (root or Path.cwd()).resolve()
    mlflow.set_tracking_uri(tracking_uri(root))
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        mlflow.set_experiment(EXPERIMENT)
        return experiment.experiment_id
    # Artifacts next to the store, not relative to whatever directory a task runs in.
    artifacts = os.environ.get("MLFLOW_ARTIFACT_ROOT") or (root / "mlartifacts").as_uri()
    experiment_id = mlflow.create_experiment(EXPERIMENT, artifact_location=artifacts)
    mlflow.set_experiment(EXPERIMENT)
    return experiment_id


def git_commit(root: Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root or Path.cwd(),
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def lineage_tags(root: Path | None = None) -> dict[str, str]:
    """Tags that tie an MLflow run to the code and orchestration that produced it."""
    tags = {"git_commit": git_commit(root)}
    if os.environ.get("AIRFLOW_CTX_DAG_RUN_ID"):
        tags["airflow_run_id"] = os.environ["AIRFLOW_CTX_DAG_RUN_ID"]
    return tags
