"""The rwlock and dvc.lock a killed dvc left unreadable are set aside before dvc runs, never
while a dvc holds the checkout; readable ones are DVC's."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import zc.lockfile  # DVC's repository lock (dvc/lock.py)

from nextbuy.dvc_lock import layout_problem, lockfile_problem, rwlock_problem, set_aside_broken

NOW = datetime(2026, 11, 28, 7, 30, 0, tzinfo=UTC)


def _rwlock(root: Path, content: bytes) -> Path:
    path = root / ".dvc" / "tmp" / "rwlock"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    return path


def _left(root: Path) -> list[str]:
    """The rwlock and what was set aside of it (not the lock files beside it)."""
    return sorted(p.name for p in (root / ".dvc" / "tmp").glob("rwlock*") if not p.name.endswith(".lock"))


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "empty"),
        (b'{"write": {"data/x": {"pid": 12, "cmd": "dvc re', "not JSON"),
        (b'{"write": {"data/x": {"pid": "12", "cmd": "dvc repro"}}}', "'write' is not"),
        (b"[]", "not an object"),
    ],
)
def test_an_unreadable_rwlock_is_set_aside_with_a_warning(tmp_path, content, why):
    path = _rwlock(tmp_path, content)
    [warning] = set_aside_broken(tmp_path, now=NOW)
    assert str(path) in warning
    assert why in warning
    assert "set aside as rwlock.corrupt-20261128T073000" in warning
    assert not path.exists()
    aside = tmp_path / ".dvc" / "tmp" / "rwlock.corrupt-20261128T073000.000000Z"
    assert aside.read_bytes() == content  # kept for a look, not deleted


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"write": {"data/ingested": {"pid": 999_999_999, "cmd": "dvc repro"}}},  # a dead pid: DVC's to drop
        {"read": {"params.yaml": [{"pid": 1, "cmd": "dvc repro"}, {"pid": 2, "cmd": "dvc exp run"}]}},
    ],
)
def test_a_readable_rwlock_is_left_to_dvc(tmp_path, doc):
    content = json.dumps(doc).encode()
    path = _rwlock(tmp_path, content)
    assert set_aside_broken(tmp_path) == []
    assert path.read_bytes() == content
    assert _left(tmp_path) == ["rwlock"]


def test_no_rwlock_is_nothing_to_do(tmp_path):
    assert set_aside_broken(tmp_path) == []
    assert not (tmp_path / ".dvc").exists()


@pytest.mark.parametrize("lock", ["lock", "rwlock.lock"])
def test_nothing_is_touched_while_a_dvc_holds_the_checkout(tmp_path, lock):
    path = _rwlock(tmp_path, b"")  # a live dvc may be half-way through writing it
    held = zc.lockfile.LockFile(str(path.parent / lock))  # as DVC takes it
    try:
        assert set_aside_broken(tmp_path) == []
        assert _left(tmp_path) == ["rwlock"]
    finally:
        held.close()
    assert len(set_aside_broken(tmp_path)) == 1  # the dvc is gone


def test_a_hardlink_lock_checkout_is_left_to_dvc(tmp_path):
    path = _rwlock(tmp_path, b"")
    (tmp_path / ".dvc" / "config").write_text("[core]\n    remote = local\n    hardlink_lock = true\n")
    assert set_aside_broken(tmp_path) == []
    assert path.exists()


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"write": {"a": {"pid": 1, "cmd": "x"}}, "read": {"b": [{"pid": 2, "cmd": "y"}]}},
        {"write": {"a": {"pid": 1}}},
        {"write": {"a": {"pid": 1, "cmd": "x", "more": 1}}},
        {"read": {"b": {"pid": 2, "cmd": "y"}}},
        {"other": {}},
        [],
    ],
)
def test_the_layout_check_agrees_with_dvcs_own_schema(doc):
    from dvc.rwlock import SCHEMA
    from voluptuous import Invalid

    try:
        SCHEMA(doc)
        dvc_reads_it = True
    except Invalid:
        dvc_reads_it = False
    assert (layout_problem(doc) is None) == dvc_reads_it


LOCKFILE = "schema: '2.0'\nstages:\n  hello:\n    cmd: echo hi > out.txt\n    outs:\n    - path: out.txt\n"


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("", "empty"),
        (LOCKFILE[:-12], "not DVC's layout"),  # cut short inside the last stage
        ("schema: '2.0'\nstages:\n  hello: [cmd", "not YAML"),
    ],
)
def test_an_unreadable_dvc_lock_is_set_aside_too(tmp_path, content, why):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "dvc.lock").write_text(content)
    [warning] = set_aside_broken(tmp_path, now=NOW)
    assert "dvc.lock was unreadable" in warning
    assert why in warning
    assert not (tmp_path / "dvc.lock").exists()
    assert (tmp_path / "dvc.lock.corrupt-20261128T073000.000000Z").read_text() == content


def test_a_readable_dvc_lock_is_left_and_a_held_checkout_untouched(tmp_path):
    (tmp_path / ".dvc" / "tmp").mkdir(parents=True)
    (tmp_path / "dvc.lock").write_text(LOCKFILE)
    assert lockfile_problem(tmp_path / "dvc.lock") is None
    assert set_aside_broken(tmp_path) == []
    (tmp_path / "dvc.lock").write_text("")
    held = zc.lockfile.LockFile(str(tmp_path / ".dvc" / "tmp" / "lock"))
    try:
        assert set_aside_broken(tmp_path) == []
        assert (tmp_path / "dvc.lock").read_text() == ""
    finally:
        held.close()


@pytest.mark.parametrize(
    ("broken", "refusal"),
    [(".dvc/tmp/rwlock", "Unable to read RWLock-file"), ("dvc.lock", "validation failed")],
)
def test_dvc_repro_runs_again_once_the_file_a_killed_dvc_emptied_is_set_aside(tmp_path, broken, refusal):
    def dvc(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "dvc", *args]
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    assert dvc("init", "-q").returncode == 0
    (tmp_path / "dvc.yaml").write_text("stages:\n  hello:\n    cmd: echo hi > out.txt\n    outs: [out.txt]\n")
    assert dvc("repro").returncode == 0
    (tmp_path / broken).write_bytes(b"")
    refused = dvc("repro")
    assert refused.returncode != 0
    assert refusal in refused.stdout + refused.stderr
    assert len(set_aside_broken(tmp_path)) == 1
    ran = dvc("repro")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert (tmp_path / "out.txt").read_text() == "hi\n"
    assert rwlock_problem(tmp_path / ".dvc" / "tmp" / "rwlock") is None  # DVC wrote new ones
    assert lockfile_problem(tmp_path / "dvc.lock") is None
