"""Atomic file writes: a finished, fsynced temporary sibling renamed (or hard-linked)
into place, so a reader never sees half a file and a failure leaves the old one.

Standard library only: ``nextbuy.orchestration`` (imported when Airflow parses the
DAGs) uses it, and so does ``nextbuy.mlops.io``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

NEW_FILE_MODE = 0o644


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
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


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
