"""Before ``dvc repro`` / ``dvc checkout``: set aside the DVC files a killed ``dvc`` left
unreadable.

DVC (3.x) rewrites two files in place: ``.dvc/tmp/rwlock`` (JSON: which paths each running
command reads and writes), when a command starts and ends a stage, and ``dvc.lock`` (YAML:
what each stage last ran with), after a stage ran. A ``dvc`` killed while it rewrites one
(kill -9, OOM, power loss) leaves it empty or cut short, and from then on every ``dvc repro``
in the checkout fails ("Unable to read RWLock-file '.dvc/tmp/rwlock'. JSON structure is
corrupted"; "'./dvc.lock' validation failed") until someone deletes or restores it by hand.
(Entries of dead processes in a readable rwlock are DVC's own to clear: it drops them with a
warning.)

:func:`set_aside_broken` renames such a file to ``<name>.corrupt-<UTC time>`` beside it, only
while no ``dvc`` process holds the repository: DVC holds ``.dvc/tmp/lock`` (an exclusive
``flock``, via zc.lockfile) for the whole of a repro or checkout and ``.dvc/tmp/rwlock.lock``
while it edits the rwlock, so both are tried the same way, without waiting and held while the
files are looked at again and moved. Held by someone: nothing is touched (a live ``dvc`` may be
writing them). A checkout configured with ``core.hardlink_lock`` (DVC's lock by hard links,
not ``flock``) is left alone. DVC then starts a new rwlock, and ``dvc repro`` writes a new
dvc.lock, taking each stage's outputs from its run cache (or running it again).

``make run`` / ``make run-preset`` and the Airflow stage tasks run ``nextbuy check-dvc-lock``
first; the Airflow teardown's ``dvc checkout`` calls :func:`set_aside_broken` directly.

Standard library only (it runs before every stage task), and DVC's own dvc.lock schema.
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
LOCKFILE = "dvc.lock"  # what each stage last ran with (DVC rewrites it in place too)
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


def lockfile_problem(path: Path) -> str | None:
    """Why ``dvc.lock`` at ``path`` would stop DVC (read with DVC's own YAML parser and schema);
    None when it is readable or absent, or DVC cannot be imported here."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return None
    if not text.strip():
        return "empty" if not text else "blank"
    try:
        from dvc.schema import COMPILED_LOCKFILE_SCHEMA
        from dvc.utils.serialize import YAMLFileCorruptedError, parse_yaml
        from voluptuous import Invalid
    except ImportError:
        return None
    try:
        COMPILED_LOCKFILE_SCHEMA(parse_yaml(text, str(path)))
    except YAMLFileCorruptedError:
        return "not YAML: cut short"
    except Invalid as err:
        return f"not DVC's layout: {err}"
    return None


def _set_aside(path: Path, problem: str, now: datetime | None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%fZ")
    aside = path.with_name(f"{path.name}{CORRUPT_SUFFIX}{stamp}")
    os.replace(path, aside)
    killed = "a dvc process was killed while writing it"
    return f"{path} was unreadable ({problem}: {killed}): set aside as {aside.name}"


def set_aside_broken(root: str | os.PathLike = ".", now: datetime | None = None) -> list[str]:
    """Rename ``root``'s unreadable ``.dvc/tmp/rwlock`` and ``dvc.lock`` to
    ``<name>.corrupt-<UTC time>`` beside them when no ``dvc`` holds the repository; one warning
    line per file set aside (none: nothing unreadable, a ``dvc`` running, a hard-link lock, not
    POSIX, not a DVC project). DVC then starts a new rwlock, and ``dvc repro`` writes a new
    dvc.lock, taking each stage's outputs from its run cache or running it again."""
    root = Path(root)
    tmp_dir = root / TMP_DIR
    files = {tmp_dir / RWLOCK: rwlock_problem, root / LOCKFILE: lockfile_problem}
    if fcntl is None or not tmp_dir.parent.is_dir() or hardlink_lock(root):
        return []
    if all(check(path) is None for path, check in files.items()):
        return []
    tmp_dir.mkdir(exist_ok=True)
    warnings = []
    with repo_unlocked(tmp_dir) as free:
        for path, check in files.items():
            problem = check(path)  # again, now that no dvc can start or write it
            if free and problem is not None:
                warnings.append(_set_aside(path, problem, now))
    held = f"no dvc process holds this checkout ({tmp_dir / REPO_LOCK} free)"
    return [f"{warning}; {held}" for warning in warnings]
