"""Atomic file writes: a finished, fsynced temporary sibling renamed (or hard-linked)
into place, so a reader never sees half a file and a failure leaves the old one; and a
full disk or a file-size limit said in one line naming the file.

Standard library only: ``nextbuy.orchestration`` (imported when Airflow parses the
DAGs) uses it, and so does ``nextbuy.mlops.io``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

NEW_FILE_MODE = 0o644
NEW_DIR_MODE = 0o755
# Write errors that say the storage, not the data, is the problem.
STORAGE_ERRNOS = {
    errno.EFBIG: "file too large (EFBIG)",
    errno.ENOSPC: "no space left on device (ENOSPC)",
    errno.EDQUOT: "disk quota exceeded (EDQUOT)",
}
# What SQLite says instead (it keeps no errno): an I/O error on a write, SQLITE_FULL.
SQLITE_STORAGE_ERRORS = ("disk i/o error", "database or disk is full")


def _temp_sibling(path: Path) -> Path:
    """An empty temporary file in ``path``'s folder (same file system: rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _seal(tmp: Path, mode: int) -> None:
    """Give the temp file its final mode and flush it to disk before it takes the real name."""
    os.chmod(tmp, mode)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` to write; it replaces ``path`` only on
    success (keeping the old file's mode; new files get NEW_FILE_MODE)."""
    target = Path(path)
    tmp = _temp_sibling(target)
    try:
        yield tmp
        _seal(tmp, target.stat().st_mode & 0o777 if target.exists() else NEW_FILE_MODE)
        os.replace(tmp, target)
    except OSError as err:
        if err.errno in STORAGE_ERRNOS and err.filename in (None, str(tmp)):
            # A failed write names no file (or the temporary one): name the file being written.
            raise OSError(err.errno, os.strerror(err.errno), str(target)) from err
        raise
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def staging_dir(target: Path) -> Path:
    """An empty directory beside ``target`` to build its replacement in, with the mode a new
    directory gets (``mkdtemp`` makes it 0700, which the renamed output would keep)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    staging.chmod(NEW_DIR_MODE)
    return staging


def create_exclusive(path: str | os.PathLike, text: str) -> bool:
    """Write ``path`` atomically only if it does not exist yet; False when it does.
    (A hard link of a finished temp file: the name appears complete or not at all.)"""
    target = Path(path)
    tmp = _temp_sibling(target)
    try:
        tmp.write_text(text)
        _seal(tmp, NEW_FILE_MODE)
        os.link(tmp, target)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _exceptions(err: BaseException | None) -> Iterator[BaseException]:
    """``err`` and what caused it, outermost first."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _storage_cause(code: int | None, path: Path) -> str:
    """Why a write to ``path`` failed: the file-size limit, the free space, or the errno's words."""
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        limited = limit != resource.RLIM_INFINITY
    except (ImportError, OSError, ValueError):
        limit, limited = 0, False
    if code == errno.EFBIG or (code is None and limited):
        what = STORAGE_ERRNOS[errno.EFBIG]
        return f"{what}: the file-size limit (ulimit -f) is {limit} bytes" if limited else what
    folder = next((p for p in (path.parent, *path.parents) if p.is_dir()), Path.cwd())
    try:
        free = f"; {shutil.disk_usage(folder).free} bytes free on {folder}"
    except OSError:
        free = ""
    what = STORAGE_ERRNOS.get(code or errno.ENOSPC, os.strerror(code or errno.ENOSPC))
    return f"{what}{free}"


def storage_failure(err: BaseException, database: str | os.PathLike | None = None) -> str | None:
    """One line naming the file and the cause when ``err`` (or what caused it) is a full disk,
    a quota or a file-size limit; None otherwise. ``database``: the SQLite file a 'disk I/O
    error' or 'database or disk is full' from SQLite is about (SQLite keeps the old state:
    its transaction is rolled back)."""
    for e in _exceptions(err):
        if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
            path = Path(os.fsdecode(e.filename)) if e.filename else None
            where = f"cannot write {path}" if path else "a write failed"
            return f"{where}: {_storage_cause(e.errno, path or Path.cwd())}"
        if database is not None and any(m in str(e).lower() for m in SQLITE_STORAGE_ERRORS):
            db = Path(database)
            return (
                f"cannot write {db} (the MLflow tracking store): {_storage_cause(None, db)}; "
                "its last committed state is kept"
            )
    return None


# Errors that say this user may not write there.
UNWRITABLE_ERRNOS = {
    errno.EROFS: "read-only file system (EROFS): remount it read-write, or run from a writable checkout",
    errno.EACCES: "permission denied (EACCES): give this user write access to {folder}",
    errno.EPERM: "operation not permitted (EPERM): give this user write access to {folder}",
}


def unwritable(err: BaseException) -> str | None:
    """One line naming the path and what to do when ``err`` (or what caused it) is a folder
    this process may not write: read-only, or another user's; None otherwise."""
    for e in _exceptions(err):
        if isinstance(e, OSError) and e.errno in UNWRITABLE_ERRNOS and e.filename:
            path = Path(os.fsdecode(e.filename))
            return f"cannot write {path}: " + UNWRITABLE_ERRNOS[e.errno].format(folder=path.parent)
    return None
