"""Atomic writes: the old file stays until the new one is complete; no temp files left."""

from __future__ import annotations

import pytest

from nextbuy import files


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_atomic_path_replaces_only_on_success_and_keeps_the_mode(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    files.atomic_write_text(target, "one")
    assert target.read_text() == "one"
    assert target.stat().st_mode & 0o777 == files.NEW_FILE_MODE
    target.chmod(0o600)

    def write_then_fail() -> None:
        with files.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError, match="writer failed"):
        write_then_fail()
    assert target.read_text() == "one"
    files.atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert target.stat().st_mode & 0o777 == 0o600
    assert _leftovers(target.parent) == []


def test_create_exclusive_writes_once(tmp_path):
    target = tmp_path / "lock.yaml"
    assert files.create_exclusive(target, "mine")
    assert not files.create_exclusive(target, "theirs")
    assert target.read_text() == "mine"
    assert _leftovers(tmp_path) == []


def test_a_file_size_limit_is_an_error_naming_the_file_and_the_limit(tmp_path):
    """Under ``ulimit -f`` (SIGXFSZ ignored, as Python does) a write fails with EFBIG: said in
    one line naming the file being written, not the temporary one; the old file stays."""
    import subprocess
    import sys

    target = tmp_path / "model.pt"
    target.write_bytes(b"old")
    script = (
        "import resource, sys\n"
        "from nextbuy import files\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "try:\n"
        "    with files.atomic_path(sys.argv[1]) as tmp:\n"
        "        tmp.write_bytes(bytes(10000))\n"
        "except OSError as err:\n"
        "    print(files.storage_failure(err))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"cannot write {target}: file too large (EFBIG): the file-size limit (ulimit -f) is 4096 bytes"
    )
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_an_sqlite_disk_error_names_the_database_and_other_errors_are_not_storage(tmp_path):
    import errno
    import sqlite3

    db = tmp_path / "mlflow.db"
    try:
        try:
            raise sqlite3.OperationalError("disk I/O error")
        except sqlite3.OperationalError as inner:
            raise RuntimeError("(sqlite3.OperationalError) disk I/O error") from inner
    except RuntimeError as err:
        said = files.storage_failure(err, db)
    assert said is not None
    assert said.startswith(f"cannot write {db} (the MLflow tracking store): ")
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.parquet"))
    assert (files.storage_failure(full) or "").startswith(
        f"cannot write {tmp_path / 'x.parquet'}: no space left on device (ENOSPC); "
    )
    assert files.storage_failure(ValueError("bad column"), db) is None
    assert files.storage_failure(OSError(errno.ENOENT, "No such file", "x"), db) is None


def test_a_directory_output_written_whole_is_readable_by_others(tmp_path):
    from nextbuy.mlops.io import atomic_dir

    with atomic_dir(tmp_path / "models") as staging:
        (staging / "model.pt").write_bytes(b"weights")
    assert (tmp_path / "models").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "models" / "model.pt").read_bytes() == b"weights"
