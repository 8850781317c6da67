"""bench faults' project copy: a dvc.lock a case broke reads as no stages."""

from __future__ import annotations

from nextbuy.bench.faults.project import Project


def test_an_unreadable_or_missing_dvc_lock_reads_as_no_stages_not_a_crash(tmp_path):
    """A case that broke dvc.lock is judged on it; the run goes on to the next case."""
    project = Project(tmp_path, {}, {})
    assert project.lock() == {}
    for content in ("", "stages: [", "schema: '2.0'\n"):
        (tmp_path / "dvc.lock").write_text(content)
        assert project.lock() == {}
        assert project.outs("ingest") == []
    (tmp_path / "dvc.lock").write_text("stages:\n  ingest:\n    outs:\n    - path: data/ingested\n")
    assert project.outs("ingest") == ["data/ingested"]
