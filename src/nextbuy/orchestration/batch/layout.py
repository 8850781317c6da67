"""Where the nightly batch's things are (the recommendations folder, a version's and a shard's
folders, the model URI, the MLflow store and environment a shard runs with) and its errors
(see ``nextbuy.orchestration.batch``). Standard library only at import time."""

from __future__ import annotations

import os
import re
from pathlib import Path

from nextbuy.orchestration.airflow_tasks import project_env
from nextbuy.orchestration.names import RECOMMENDATIONS_DIR
from nextbuy.orchestration.workspace import store_defaults

SHARD_DIR = re.compile(r"shard=(\d+)")


class BatchError(RuntimeError):
    """A failure a retry cannot fix (bad params, an incomplete batch): fails the task at once."""


class NoChampion(LookupError):
    """No released champion yet: nothing to recommend with."""


def recommendations_dir(project: Path) -> Path:
    """``<project>/recommendations``: git-ignored, in the checkout (shared by the docker stack's workers)."""
    return Path(project).resolve() / RECOMMENDATIONS_DIR


def version_dir(root: Path, version: int | str) -> Path:
    return Path(root) / f"model_version={version}"


def shard_dir(folder: Path, shard: int) -> Path:
    """The folder batch-topk writes for ``shard`` (``shard=SSS``)."""
    return Path(folder) / f"shard={shard:03d}"


def model_uri(name: str, version: int | str) -> str:
    return f"models:/{name}/{version}"


def tracking_uri(project: Path) -> str:
    """The MLflow store the stages use: ``$MLFLOW_TRACKING_URI`` (the docker stack's server),
    else the checkout's (``store_defaults``)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or store_defaults(project)["MLFLOW_TRACKING_URI"]


def batch_env(project: Path) -> dict[str, str]:
    """What ``nextbuy batch-topk`` runs with: the project's environment first on PATH, the
    checkout's code first on PYTHONPATH and its MLflow store unless the variables are set."""
    project = Path(project).resolve()
    env = project_env(project)
    env["PYTHONPATH"] = str(project / "src")
    for key, value in store_defaults(project).items():
        env[key] = os.environ.get(key) or value
    return env
