"""The files of a local Evidently Workspace, written so that a kill never leaves half of one.

Evidently's local workspace writes a snapshot or a dashboard by opening its final name and
dumping JSON into it: a process stopped half-way (SIGTERM, a full disk) leaves a truncated
file, and every later reader of the project fails on it. Here each file is written whole to a
temporary sibling, fsynced and renamed into place (``nextbuy.files.atomic_write_text``), in the
JSON Evidently reads. A snapshot that does not read back (one such a kill left) is set aside
under a quarantine name Evidently never lists (``<id>.json.corrupt``), with a warning naming it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from evidently._pydantic_compat import parse_obj_as
from evidently.core.report import Snapshot
from evidently.core.serialization import SnapshotModel
from evidently.legacy.utils import NumpyEncoder
from evidently.sdk.models import DashboardModel
from evidently.ui.storage.local.base import DASHBOARD_FILE_NAME, DOT_JSON, SNAPSHOTS_DIR_NAME, UUID_REGEX
from evidently.ui.workspace import Workspace, new_id

from nextbuy.files import atomic_write_text

log = logging.getLogger(__name__)

QUARANTINE_SUFFIX = ".corrupt"  # <id>.json.corrupt: not an id Evidently lists


def snapshot_path(ws: Workspace, project_id: Any, snapshot_id: Any) -> Path:
    return Path(ws.path) / str(project_id) / SNAPSHOTS_DIR_NAME / f"{snapshot_id}{DOT_JSON}"


def add_snapshot(ws: Workspace, project_id: Any, snapshot: Snapshot) -> str:
    """Write ``snapshot`` into the project under a new id, atomically; the id."""
    snapshot_id = str(new_id())
    text = json.dumps(snapshot.to_snapshot_model().dict(), cls=NumpyEncoder)
    atomic_write_text(snapshot_path(ws, project_id, snapshot_id), text)
    return snapshot_id


def save_dashboard(ws: Workspace, project_id: Any, dashboard: DashboardModel) -> None:
    """The project's dashboard.json, replaced atomically."""
    text = json.dumps(dashboard.dict(), cls=NumpyEncoder)
    atomic_write_text(Path(ws.path) / str(project_id) / DASHBOARD_FILE_NAME, text)


def quarantine(path: Path, err: Exception) -> Path:
    """Move an unreadable snapshot out of Evidently's sight (same folder); the new path."""
    target = path.with_name(path.name + QUARANTINE_SUFFIX)
    os.replace(path, target)
    log.warning(
        "Evidently workspace: snapshot %s does not read (%s: %s); set aside as %s",
        path,
        type(err).__name__,
        str(err).splitlines()[0][:200] if str(err) else "",
        target.name,
    )
    return target


def set_aside_unreadable(workspace_dir: str | os.PathLike) -> dict[str, dict[str, dict]]:
    """Quarantine, with a warning naming each, every snapshot of the workspace that does not read
    back as one (truncated, not JSON, not a snapshot): Evidently's Workspace reads them all when it
    opens and fails on the first. The metadata of those that read, by project id and snapshot id
    (so publishing finds the snapshots it replaces without reading each again by ``get_run``)."""
    readable: dict[str, dict[str, dict]] = {}
    for path in sorted(Path(workspace_dir).glob(f"*/{SNAPSHOTS_DIR_NAME}/*{DOT_JSON}")):
        snapshot_id = path.name[: -len(DOT_JSON)]
        if not UUID_REGEX.match(snapshot_id):
            continue  # not a name Evidently lists (our temporary files start with '.')
        try:
            with path.open() as f:
                model = parse_obj_as(SnapshotModel, json.load(f))
        except ValueError as err:  # JSONDecodeError, pydantic's ValidationError, bad UTF-8
            quarantine(path, err)
            continue
        readable.setdefault(path.parent.parent.name, {})[snapshot_id] = dict(model.metadata)
    return readable
