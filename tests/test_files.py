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
