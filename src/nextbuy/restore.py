"""Keep a stage's last good outputs: the new ones take their place only when the stage
succeeds, and a failed or stopped stage leaves the last good ones in place.

Two ways the last good outputs are kept, both without copying data:

* **Set aside.** Before a stage runs, each output it declares in dvc.yaml that exists (a
  stage run by hand; ``dvc repro`` has already deleted them) is renamed to a sibling
  ``.<name>.previous``. The stage then writes its new outputs; on success the set-aside
  ones are deleted, on failure the half-written new ones are deleted and the set-aside
  ones renamed back. Renames in one folder need no free space, so a full disk cannot stop
  the way back.
* **From the DVC cache.** ``dvc repro`` deletes a stage's outputs before running it, so a
  stage that fails there has nothing set aside: every output ``dvc.lock`` records for it
  (its last successful run) comes back from the DVC cache, hard-linked where the cache is
  on the same file system (no space needed; DVC's cache files are read-only, so nothing
  writes through the link), copied where it is not — after the half-written new outputs
  are deleted, which frees the space the copy needs. Every output is cached (no
  ``cache: false`` in dvc.yaml) for this reason.

A run killed with no chance to clean up (kill -9, a power cut) leaves staging entries
beside its outputs (``.<name>.*``: temporary files, staging folders, a set-aside output);
the next run of the stage removes them and says how many, and puts a set-aside output
back first, since it is the last good one.

Standard library + PyYAML only: it runs in the failure path of every stage.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from nextbuy import yaml_io
from nextbuy.files import staging_dir

LOCK_FILE = "dvc.lock"
PREVIOUS_SUFFIX = ".previous"
# A hard link cannot be made here: another file system, or one without links; copy instead.
NO_LINK_ERRNOS = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}


@dataclass(frozen=True)
class Restored:
    """What a restore did: outputs now as dvc.lock records them, and those the DVC cache
    does not hold (never cached, or the stage never ran)."""

    restored: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class SetAside:
    """A stage's outputs while it runs: those renamed aside (``moved``), every output it
    declares (``outputs``) and the stale staging entries removed before it started."""

    root: Path
    outputs: tuple[str, ...]
    moved: tuple[str, ...]
    swept: tuple[str, ...]


def previous_path(target: Path) -> Path:
    """Where ``target`` waits while its stage runs."""
    return target.with_name(f".{target.name}{PREVIOUS_SUFFIX}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _staging_entries(target: Path) -> list[Path]:
    """What an interrupted write of ``target`` leaves beside it: ``.<name>.*`` (a temporary
    file, a staging folder, ``.<name>.old``, the set-aside output)."""
    if not target.parent.is_dir():
        return []
    return sorted(target.parent.glob(f".{glob.escape(target.name)}.*"))


def set_aside(outputs: Iterable[str], root: str | os.PathLike = ".") -> SetAside:
    """Rename each existing output aside before its stage runs, after removing what an
    interrupted run left beside it (putting an output it had set aside back in place)."""
    root = Path(root)
    outputs = tuple(outputs)
    moved: list[str] = []
    swept: list[str] = []
    try:
        for out in outputs:
            target = root / out
            previous = previous_path(target)
            for entry in _staging_entries(target):
                if entry != previous:
                    _remove(entry)
                    swept.append(str(entry.relative_to(root)))
            if previous.exists():  # an interrupted run set it aside: it is the last good one
                if target.exists() or target.is_symlink():
                    _remove(target)
                    swept.append(out)
                moved.append(out)
            elif target.exists():
                os.replace(target, previous)
                moved.append(out)
    except OSError:  # a folder it may not write: what it moved goes back, the stage does not run
        for out in moved:
            os.replace(previous_path(root / out), root / out)
        raise
    return SetAside(root, outputs, tuple(moved), tuple(swept))


def keep_new(aside: SetAside) -> None:
    """The stage succeeded: drop what was set aside."""
    for out in aside.moved:
        _remove(previous_path(aside.root / out))


def put_back(aside: SetAside, stage: str) -> Restored:
    """The stage failed: delete its half-written outputs, rename the set-aside ones back, and
    bring the rest back from the DVC cache as dvc.lock records them."""
    for out in aside.outputs:
        target = aside.root / out
        if out in aside.moved:
            _remove(target)
            os.replace(previous_path(target), target)
        else:
            _remove(target)  # new and half-written: frees the space the restore may need
    back = restore_stage_outputs(stage, aside.root, only=[o for o in aside.outputs if o not in aside.moved])
    return Restored(tuple(aside.moved) + back.restored, back.missing)


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


def _link_or_copy(source: Path, dest: Path) -> None:
    """``dest`` as a hard link to ``source`` (no space needed), else a copy."""
    try:
        os.link(source, dest)
    except OSError as err:
        if err.errno not in NO_LINK_ERRNOS:
            raise
        shutil.copyfile(source, dest)


def _restore_file(cache: Path, md5: str, target: Path) -> bool:
    """The cached object in place of ``target`` unless it already holds it; False if not cached."""
    source = _object(cache, md5)
    if not source.is_file():
        return False
    if target.is_file() and _md5(target) == md5:
        return True
    if target.is_dir():
        shutil.rmtree(target)
    # Not files.atomic_path: its chmod would reach the cache object through the link.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.restore")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp.unlink(missing_ok=True)
    try:
        _link_or_copy(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
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
    try:
        for entry in entries:
            dest = staging / entry["relpath"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(_object(cache, entry["md5"]), dest)
        _remove(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return True


def restore_stage_outputs(
    stage: str, root: str | os.PathLike = ".", only: Iterable[str] | None = None
) -> Restored:
    """Bring back ``stage``'s outputs (``only`` these, when given) as ``dvc.lock`` records
    them; no lock entry means nothing to restore."""
    root = Path(root)
    lock = root / LOCK_FILE
    if not lock.exists():
        return Restored()
    entry = (yaml_io.load(lock.read_text()) or {}).get("stages", {}).get(stage)
    if not entry:
        return Restored()
    wanted = None if only is None else set(only)
    cache = _cache_dir(root)
    restored: list[str] = []
    missing: list[str] = []
    for out in entry.get("outs", []):
        md5 = out.get("md5")
        if not md5 or (wanted is not None and out["path"] not in wanted):
            continue
        target = root / out["path"]
        restore = _restore_dir if md5.endswith(".dir") else _restore_file
        (restored if restore(cache, md5, target) else missing).append(out["path"])
    return Restored(tuple(restored), tuple(missing))
