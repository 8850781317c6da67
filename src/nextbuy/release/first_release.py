"""Before a deploy judges: repair what a killed deploy left in the registry, and refuse to seed a
new first champion silently while an earlier release is on record (see ``nextbuy.stages.deploy``)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from nextbuy import paths, yaml_io
from nextbuy.mlops import io, tracking
from nextbuy.release.record import Release

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

# Set (1/true/yes) to seed a new first champion although an earlier release is on record.
FIRST_RELEASE_ENV = "NEXTBUY_FIRST_RELEASE"


def first_release_allowed() -> bool:
    return os.environ.get(FIRST_RELEASE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _blessing_evidence(model_name: str) -> str | None:
    try:
        earlier = Release.from_json(json.loads(paths.BLESSING.read_text()))
    except (OSError, ValueError):  # none, or not a release record (pydantic's errors are ValueErrors)
        return None
    if earlier.version is None or earlier.model_name != model_name:
        return None
    return f"{paths.BLESSING} records v{earlier.version}"


def _lock_evidence(model_name: str, lock: Path = Path("dvc.lock")) -> str | None:
    try:
        stage = (yaml_io.load(lock.read_text()) or {}).get("stages", {}).get("deploy")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    if not isinstance(stage, dict):
        return None
    recorded = ((stage.get("params") or {}).get("params.yaml") or {}).get("deploy") or {}
    if recorded.get("model_name", model_name) != model_name:
        return None
    return f"{lock} records a finished deploy"


def earlier_release_evidence(model_name: str) -> list[str]:
    """What says ``model_name`` was released before: blessing.json (a version), dvc.lock (a deploy)."""
    return [e for e in (_blessing_evidence(model_name), _lock_evidence(model_name)) if e]


def check_first_release(client: MlflowClient, model_name: str) -> None:
    """Refuse to seed a first champion on floors only when an earlier release is on record."""
    # MLflow: imported where the guard reads the registry
    from nextbuy.release import registry

    if registry.has_release(client, model_name) or first_release_allowed():
        return
    evidence = earlier_release_evidence(model_name)
    if evidence:
        raise io.DataError(
            tracking.tracking_uri(),
            f"no release of model '{model_name}' in this MLflow store, but "
            + " and ".join(evidence)
            + ": the registry was lost or MLFLOW_TRACKING_URI points elsewhere. Restore it, or seed a "
            f"new first champion judged on the floors only: nextbuy deploy --first-release "
            f"(under dvc repro / Airflow: {FIRST_RELEASE_ENV}=1).",
        )


def abandon_release(client: MlflowClient, model_name: str) -> list[str]:
    """A deploy told to stop (its run already ended): mark the version it left incomplete
    ``orphaned`` and undo its alias moves now, not at the next deploy. The versions marked."""
    # MLflow: imported where the guard reads the registry
    from nextbuy.release import registry

    orphans = registry.sweep_orphans(client, model_name)
    for version in orphans:
        log.warning(
            "deploy stopped: %s v%s was left incomplete: marked '%s', never served",
            model_name,
            version,
            registry.ORPHANED,
        )
    return orphans


def prepare_registry(client: MlflowClient, model_name: str) -> None:
    """Before judging: repair what a killed deploy left, refuse a silent re-seed."""
    # MLflow: imported where the guard reads the registry
    from nextbuy.release import registry

    for version in registry.sweep_orphans(client, model_name):
        log.warning(
            "deploy: %s v%s was left incomplete by a deploy that did not finish: marked '%s', ignored",
            model_name,
            version,
            registry.ORPHANED,
        )
    check_first_release(client, model_name)
