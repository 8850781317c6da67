"""Before ``dvc repro`` / ``dvc checkout``: set aside a DVC rwlock file that a killed ``dvc``
left unreadable.

DVC (3.x) records which paths each running command reads and writes in ``.dvc/tmp/rwlock``
(JSON), rewriting the file in place when a command starts and ends a stage. A ``dvc`` killed
while it rewrites it (kill -9, OOM, power loss) leaves it empty or cut short, and from then
on every ``dvc repro`` in the checkout fails with "Unable to read RWLock-file
'.dvc/tmp/rwlock'. JSON structure is corrupted" until someone deletes it by hand. (Entries of
dead processes in a readable file are DVC's own to clear: it drops them with a warning.)

:func:`set_aside_broken_rwlock` renames such a file to ``rwlock.corrupt-<UTC time>`` beside
it, only while no ``dvc`` process holds the repository: DVC holds ``.dvc/tmp/lock`` (an
exclusive ``flock``, via zc.lockfile) for the whole of a repro or checkout and
``.dvc/tmp/rwlock.lock`` while it edits the rwlock, so both are tried the same way, without
waiting and held while the file is looked at again and moved. Held by someone: the file is
left alone (a live ``dvc`` may be writing it). A checkout configured with
``core.hardlink_lock`` (DVC's lock by hard links, not ``flock``) is left alone.

``make run`` / ``make run-preset`` and the Airflow stage tasks run ``nextbuy check-dvc-lock``
first; the Airflow teardown's ``dvc checkout`` calls this directly.

Standard library only: it runs before every stage task.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

try:
    import fcntl
except ModuleNotFoundError:  # pragma: no cover - not on POSIX: DVC's lock is not a flock there
    fcntl = None  # type: ignore[assignment]

TMP_DIR = Path(".dvc") / "tmp"
RWLOCK = "rwlock"  # dvc/rwlock.py: RWLOCK_FILE
RWLOCK_GUARD = "rwlock.lock"  # dvc/rwlock.py: RWLOCK_LOCK, held while the rwlock is edited
REPO_LOCK = "lock"  # dvc/repo/__init__.py: the repository's lock, held for a whole repro
CORRUPT_SUFFIX = ".corrupt-"


def _is_info(value: object) -> bool:
    """DVC's INFO_SCHEMA: exactly ``{"pid": int, "cmd": str}``."""
    return (
        isinstance(value, dict)
        and set(value) == {"pid", "cmd"}
        and isinstance(value["pid"], int)
        and isinstance(value["cmd"], str)
    )


def layout_problem(doc: object) -> str | None:
    """Why ``doc`` (parsed JSON) is not an rwlock as DVC reads it (dvc/rwlock.py SCHEMA:
    optional ``write`` {path: info} and ``read`` {path: [info]}, nothing else); None if it is."""
    if not isinstance(doc, dict):
        return f"a JSON {type(doc).__name__}, not an object"
    extra = sorted(set(doc) - {"write", "read"})
    if extra:
        return f"unknown keys {extra}"
    write, read = doc.get("write", {}), doc.get("read", {})
    if not isinstance(write, dict) or not all(isinstance(k, str) and _is_info(v) for k, v in write.items()):
        return "'write' is not {path: {pid, cmd}}"
    if not isinstance(read, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(_is_info(i) for i in v) for k, v in read.items()
    ):
        return "'read' is not {path: [{pid, cmd}]}"
    return None


def rwlock_problem(path: Path) -> str | None:
    """Why the rwlock file at ``path`` would stop DVC; None when it is readable or absent."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if not data.strip():
        return "empty" if not data else "blank"
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        return f"not JSON ({err})"
    return layout_problem(doc)


def hardlink_lock(root: Path) -> bool:
    """Whether .dvc/config(.local) sets ``core.hardlink_lock`` true (DVC's lock is then not a flock)."""
    for name in ("config", "config.local"):
        config = root / ".dvc" / name
        if not config.is_file():
            continue
        core = re.search(r"^\[core\](.*?)(?=^\[|\Z)", config.read_text(errors="replace"), re.M | re.S)
        if core and re.search(r"^\s*hardlink_lock\s*=\s*(true|1|yes)\s*$", core.group(1), re.M | re.I):
            return True
    return False


@contextlib.contextmanager
def _try_flock(path: Path) -> Iterator[bool]:
    """Hold an exclusive flock on ``path`` (created if missing, never written) for the block if
    nobody else holds one: True; False at once when someone does."""
    assert fcntl is not None
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def repo_unlocked(tmp_dir: Path) -> Iterator[bool]:
    """True (and both held for the block) when no process holds DVC's repository lock nor the
    rwlock's edit lock in ``tmp_dir``; False when one is held (a ``dvc`` is running)."""
    with _try_flock(tmp_dir / REPO_LOCK) as repo, contextlib.ExitStack() as stack:
        yield repo and stack.enter_context(_try_flock(tmp_dir / RWLOCK_GUARD))


def set_aside_broken_rwlock(root: str | os.PathLike = ".", now: datetime | None = None) -> str | None:
    """Rename ``root``'s unreadable ``.dvc/tmp/rwlock`` to ``rwlock.corrupt-<UTC time>`` when no
    ``dvc`` holds the repository; the one-line warning saying so, or None when there was nothing
    to do (no file, a readable one, a ``dvc`` running, a hard-link lock, not POSIX)."""
    root = Path(root)
    tmp_dir = root / TMP_DIR
    path = tmp_dir / RWLOCK
    if fcntl is None or rwlock_problem(path) is None or hardlink_lock(root):
        return None
    with repo_unlocked(tmp_dir) as free:
        problem = rwlock_problem(path)  # again, now that no dvc can start or write it
        if not free or problem is None:
            return None
        stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%fZ")
        aside = path.with_name(f"{RWLOCK}{CORRUPT_SUFFIX}{stamp}")
        os.replace(path, aside)
    return (
        f"{path} was unreadable ({problem}: a dvc process was killed while writing it) and no dvc "
        f"process holds this checkout ({tmp_dir / REPO_LOCK} free): set aside as {aside.name}, "
        "DVC starts a new one"
    )
