"""Put a failed stage's last good outputs back, from the DVC cache.

``dvc repro`` deletes a stage's outputs before running it, so a stage that fails
(bad input, a typo in params.yaml, a crash) would leave nothing behind — metrics
and plots included. The stage command calls :func:`restore_stage_outputs` on its
way out of a failure: every output recorded for the stage in ``dvc.lock`` (its last
successful run) that is missing or differs is copied back from the DVC cache, so
``make run``, ``dvc repro`` and the Airflow tasks (which all run the stage command)
leave the last good outputs in place. Every output is cached (no ``cache: false``
in dvc.yaml) for this reason: an uncached output cannot be brought back.

Standard library + PyYAML only: it runs in the failure path of every stage.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

from nextbuy import yaml_io
from nextbuy.files import atomic_path, staging_dir

LOCK_FILE = "dvc.lock"


def _cache_dir(root: Path) -> Path:
    """The DVC cache: ``cache.dir`` of .dvc/config.local or .dvc/config (relative to .dvc/), else
    .dvc/cache."""
    for name in ("config.local", "config"):
        config = root / ".dvc" / name
        if not config.exists():
            continue
        match = re.search(r"^\[cache\][^\[]*?^\s*dir\s*=\s*(.+?)\s*$", config.read_text(), re.M | re.S)
        if match:
            return (root / ".dvc" / match.group(1)).resolve()
    return root / ".dvc" / "cache"


def _object(cache: Path, md5: str) -> Path:
    return cache / "files" / "md5" / md5[:2] / md5[2:]


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _restore_file(cache: Path, md5: str, target: Path) -> bool:
    """Copy the cached object over ``target`` unless it already holds it; False if not cached."""
    source = _object(cache, md5)
    if not source.is_file():
        return False
    if target.is_file() and _md5(target) == md5:
        return True
    if target.is_dir():
        shutil.rmtree(target)
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return True


def _restore_dir(cache: Path, md5: str, target: Path) -> bool:
    """Rebuild a directory output from its cached manifest; False if anything is not cached."""
    manifest = _object(cache, md5)
    if not manifest.is_file():
        return False
    entries = json.loads(manifest.read_text())
    if not all(_object(cache, e["md5"]).is_file() for e in entries):
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(target)
    for entry in entries:
        dest = staging / entry["relpath"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_object(cache, entry["md5"]), dest)
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    os.replace(staging, target)
    return True


def restore_stage_outputs(stage: str, root: str | os.PathLike = ".") -> dict[str, list[str]]:
    """Bring back ``stage``'s outputs as ``dvc.lock`` records them. Returns the paths
    ``restored`` (now as recorded) and ``missing`` (not in the cache: never cached, or
    the stage never ran); no lock entry means nothing to restore."""
    root = Path(root)
    lock = root / LOCK_FILE
    done: dict[str, list[str]] = {"restored": [], "missing": []}
    if not lock.exists():
        return done
    entry = (yaml_io.load(lock.read_text()) or {}).get("stages", {}).get(stage)
    if not entry:
        return done
    cache = _cache_dir(root)
    for out in entry.get("outs", []):
        md5 = out.get("md5")
        if not md5:
            continue
        target = root / out["path"]
        restore = _restore_dir if md5.endswith(".dir") else _restore_file
        done["restored" if restore(cache, md5, target) else "missing"].append(out["path"])
    return done
