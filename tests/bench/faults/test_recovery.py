"""What a kill case that did not recover leaves broken is put right before the next case, and
its row says so; a recovered case is left as it is."""

from __future__ import annotations

from types import SimpleNamespace

from nextbuy.bench.faults import recovery


def _project(tmp_path, rwlock: bytes):
    path = tmp_path / ".dvc" / "tmp" / "rwlock"
    path.parent.mkdir(parents=True)
    path.write_bytes(rwlock)
    return SimpleNamespace(root=tmp_path), path


def test_a_failed_case_that_left_dvcs_lock_file_unreadable_has_it_deleted_and_says_so(tmp_path):
    project, rwlock = _project(tmp_path, b"")
    row = {"case": "kill -9 at 90%", "recovered": False, "message": "Unable to read RWLock-file"}
    settled = recovery.settle(project, row)
    assert not rwlock.exists()
    assert settled["recovered"] is False  # the case keeps its failure
    assert settled["message"].startswith("Unable to read RWLock-file\n")
    assert "unreadable .dvc/tmp/rwlock this left, empty, deleted" in settled["message"]


def test_a_failed_case_that_left_dvc_lock_unreadable_has_it_deleted_too(tmp_path):
    project, rwlock = _project(tmp_path, b"{}")
    (tmp_path / "dvc.lock").write_text("")
    settled = recovery.settle(project, {"case": "kill -9 at 25%", "recovered": False, "message": "x"})
    assert not (tmp_path / "dvc.lock").exists()
    assert rwlock.read_bytes() == b"{}"
    assert "unreadable dvc.lock this left, empty, deleted" in settled["message"]


def test_a_recovered_case_or_a_readable_lock_file_is_left_alone(tmp_path):
    project, rwlock = _project(tmp_path, b"")
    row = {"case": "kill -9 at 25%", "recovered": True, "message": ""}
    assert recovery.settle(project, row) == row
    assert rwlock.exists()
    rwlock.write_bytes(b"{}")
    failed = {**row, "recovered": False}
    assert recovery.settle(project, failed) == failed
    assert rwlock.read_bytes() == b"{}"


def test_the_recovery_is_make_run_as_a_user_runs_it():
    from tests.conftest import ROOT

    assert recovery.RECOVERY[0] == "make"
    assert recovery.RECOVERY[-1] == "run"
    assert "check-dvc-lock" in (ROOT / "Makefile").read_text().split("\nrun:", 1)[1].split("\n\n")[0]
