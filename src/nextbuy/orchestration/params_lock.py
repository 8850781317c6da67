"""Run-only params and the lock of the Airflow workspace (``workspace``: a git worktree
of the project; Airflow never rewrites the checkout's params.yaml).

A training run sets ``ingest.snapshot`` to its logical date and applies the form's
overrides by writing the workspace's ``params.yaml`` (the checkout's params.yaml plus
the overrides) for the duration of the run, then puts the original back (a teardown
task). The stages are plain ``dvc repro --single-item <stage>`` there, so the
workspace's ``dvc.lock`` records exactly what ran and re-running a day finds nothing
to do.

The backup file doubles as the workspace lock: both DAGs rewrite params.yaml and
run DVC in the same directory, so a run takes the lock (creates the backup
exclusively) before its first stage and gives it back at the end. A run that finds
the lock held by another *live* run waits (the set_params sensor); a lock left by a
run that is no longer running is stale: its backup is restored first.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from nextbuy import yaml_io
from nextbuy.files import atomic_write_text, create_exclusive
from nextbuy.orchestration.names import BACKUP_FILE, PARAMS_FILE
from nextbuy.preset_files import dotted_overrides

log = logging.getLogger(__name__)

# Training form fields -> the params.yaml key each one overrides (None = no override).
FORM_PARAMS = {
    "target_precision": "thresholds.target_precision",
    "epochs": "train.epochs",
    "source": "ingest.source",
    "graph_path": "ingest.graph_path",
}


# --- the overrides of one run -------------------------------------------------------------------------------


def snapshot_iso(moment: datetime) -> str:
    """A run's logical date as the data snapshot: UTC, ISO, naive (the stages' timestamps are naive UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="seconds")


def preset_overrides(project: Path, form: Mapping[str, Any]) -> dict[str, Any]:
    """The dotted keys of the form's ``preset`` (a file of the project, e.g.
    ``presets/online-retail.yaml``; none: {}), applied before every other override."""
    preset = form.get("preset")
    if not preset:
        return {}
    try:
        return dotted_overrides(project / str(preset))
    except (OSError, ValueError) as err:  # no such file, not a mapping, an unknown section
        raise InvalidOverrides(f"preset {preset!r}: {err}") from None


def training_overrides(
    form: Mapping[str, Any], snapshot: str | None, preset: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Dotted params.yaml key -> value for one training run: the ``preset``'s keys
    (:func:`preset_overrides`), the snapshot, the form's fields that are set, then the
    free-form ``overrides`` (which win)."""
    out: dict[str, Any] = dict(preset or {})
    if snapshot is not None:
        out["ingest.snapshot"] = snapshot
    for name, key in FORM_PARAMS.items():
        if form.get(name) is not None:
            out[key] = form[name]
    out.update(form.get("overrides") or {})
    return out


def locked_section(project: Path, stage: str, section: str) -> dict | None:
    """The ``section`` of params.yaml as ``dvc.lock`` recorded it for ``stage``'s last run."""
    lock = project / "dvc.lock"
    if not lock.exists():
        return None
    recorded = (
        (yaml_io.load(lock.read_text()) or {})
        .get("stages", {})
        .get(stage, {})
        .get("params", {})
        .get(PARAMS_FILE, {})
    )
    return recorded.get(section)


def monitoring_overrides(
    project: Path, form: Mapping[str, Any], preset: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Monitoring watches traffic drawn from the store the current data was ingested
    from: the ``preset``'s keys, then ``ingest`` pinned to what dvc.lock recorded for the
    last ingest (a training run put its snapshot there and restored params.yaml
    afterwards), then the form's overrides."""
    out: dict[str, Any] = dict(preset or {})
    ingest = locked_section(project, "ingest", "ingest")
    if ingest is not None:  # as ingested (the preset's ingest keys included), whole
        out = {k: v for k, v in out.items() if not k.startswith("ingest.")}
        out["ingest"] = ingest
    out.update(form.get("overrides") or {})
    return out


class InvalidOverrides(ValueError):
    """A run's overrides name no params.yaml key or break its section: a retry cannot help."""


def apply_overrides(params: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``params`` with each dotted key set (``train.epochs``; ``ingest`` alone
    replaces the section)."""
    out = copy.deepcopy(dict(params))
    for dotted, value in overrides.items():
        keys = str(dotted).split(".")
        if not all(keys):
            raise InvalidOverrides(f"override key {dotted!r}: empty component")
        node = out
        for i, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise InvalidOverrides(f"override key {dotted!r}: {'.'.join(keys[: i + 1])} is not a section")
            node = child
        node[keys[-1]] = copy.deepcopy(value)
    return out


def validate_params(params: Mapping[str, Any], overrides: Mapping[str, Any]) -> None:
    """Every overridden section must exist and still validate (pydantic, extra keys forbidden),
    so a typo fails the first task with the field named instead of a stage halfway through."""
    from pydantic import ValidationError

    # pydantic: DAG files parse this module
    from nextbuy.config import SECTIONS

    errors = [
        f"unknown section {str(k).split('.')[0]!r} in override {k!r} (sections: {', '.join(SECTIONS)})"
        for k in overrides
        if str(k).split(".")[0] not in SECTIONS
    ]
    for name in sorted({str(k).split(".")[0] for k in overrides} & set(SECTIONS)):
        try:
            SECTIONS[name].model_validate(params.get(name) or {})
        except ValidationError as err:
            errors.append(f"{name}: {err}")
    if errors:
        raise InvalidOverrides("invalid run overrides:\n" + "\n".join(errors))


# --- the lock: params.yaml's backup -------------------------------------------------------------------------


def read_backup(project: Path) -> dict | None:
    path = project / BACKUP_FILE
    if not path.exists():
        return None
    held = yaml_io.load(path.read_text())
    if not isinstance(held, dict) or "params_text" not in held or "owner" not in held:
        raise ValueError(
            f"{path} is not a params backup written by nextbuy.orchestration; "
            "put params.yaml right by hand and delete it"
        )
    return held


def _put_back(project: Path, held: dict) -> None:
    atomic_write_text(project / PARAMS_FILE, held["params_text"])
    (project / BACKUP_FILE).unlink(missing_ok=True)


def _take(project: Path, owner: dict, original: str) -> bool:
    """Create the backup (the lock) for ``owner``; False when another run got there first."""
    backup = yaml.safe_dump(
        {"owner": owner, "taken_at": snapshot_iso(datetime.now(UTC)), "params_text": original},
        sort_keys=False,
    )
    return create_exclusive(project / BACKUP_FILE, backup)


def acquire_params(
    project: Path,
    owner: Mapping[str, str],
    overrides: Mapping[str, Any],
    is_live: Callable[[Mapping[str, str]], bool],
    base: Path | None = None,
    before_write: Callable[[], Any] | None = None,
) -> dict[str, Any] | None:
    """Take the workspace ``project`` for ``owner`` ({dag_id, run_id}) and write its params.yaml:
    ``base``'s params.yaml (default: its own) with the overrides; keeps that original in
    BACKUP_FILE. ``before_write`` runs once the lock is held, before params.yaml is written.
    Returns the params written, or None while another live run holds the workspace.
    Re-entrant for the same owner (a retried or cleared task starts again from the original)."""
    owner = dict(owner)
    held = read_backup(project)
    if held is not None and held["owner"] != owner:
        if is_live(held["owner"]):
            log.info("params.yaml is held by %s; waiting", held["owner"])
            return None
        log.warning(
            "stale params backup of %s (run no longer live): restoring params.yaml from it", held["owner"]
        )
        _put_back(project, held)
        held = None
    original = held["params_text"] if held is not None else (Path(base or project) / PARAMS_FILE).read_text()
    try:
        params = apply_overrides(yaml_io.load(original) or {}, overrides)
        validate_params(params, overrides)
    except Exception:
        if held is not None:  # our own earlier attempt left overrides in place: undo them
            _put_back(project, held)
        raise
    if held is None and not _take(project, owner, original):
        return None
    if before_write is not None:
        before_write()
    header = (
        f"# Written by Airflow run {owner.get('dag_id')} / {owner.get('run_id')} for that run only; "
        f"the original is in {BACKUP_FILE} and comes back when the run ends.\n"
    )
    atomic_write_text(project / PARAMS_FILE, header + yaml.safe_dump(params, sort_keys=False))
    return params


def restore_params(project: Path, owner: Mapping[str, str]) -> str:
    """Put back the params.yaml ``owner`` replaced (a no-op when it holds nothing)."""
    held = read_backup(project)
    if held is None:
        return "no params backup: params.yaml untouched"
    if held["owner"] != dict(owner):
        log.warning("params backup belongs to %s, not to %s: left alone", held["owner"], dict(owner))
        return f"params backup belongs to {held['owner']}: untouched"
    _put_back(project, held)
    return "params.yaml restored"


def restore_any(project: Path) -> str:
    """By hand, after Airflow died mid-run: put back whatever backup is there, whoever took it."""
    held = read_backup(project)
    if held is None:
        return "no params backup: nothing to restore"
    _put_back(project, held)
    return f"params.yaml restored from the backup of {held['owner']}"
