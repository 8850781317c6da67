"""The stop cases start a make target as a terminal starts a foreground job: Ctrl-C reaches it
even when the bench itself runs in the background with SIGINT ignored. A full data/ disk and
a read-only data/, run for real on a tiny project (a tmpfs and a read-only bind mount; not run
where they cannot be mounted, saying why)."""

from __future__ import annotations

import signal
import sys
from types import SimpleNamespace

import pytest

from nextbuy.bench.faults import kills
from nextbuy.bench.faults.project import Project, capture
from tests.helpers import copy_finished_project, project_env

SHOWS_SIGINT = "import signal; print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"


def _sigint_ignored_in_child(tmp_path, terminal: bool) -> str:
    project = SimpleNamespace(root=tmp_path, env=None)
    log = tmp_path / f"terminal-{terminal}.log"
    proc = kills.start(project, [sys.executable, "-c", SHOWS_SIGINT], log, terminal=terminal)
    proc.wait(timeout=60)
    return log.read_text().strip()


def test_a_make_target_gets_sigint_at_its_default_even_from_a_bench_that_ignores_it(tmp_path):
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as `nextbuy bench faults &` starts
    try:
        assert _sigint_ignored_in_child(tmp_path, terminal=False) == "True"  # inherited
        assert _sigint_ignored_in_child(tmp_path, terminal=True) == "False"  # as from a terminal
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.slow
def test_a_full_or_read_only_data_folder_is_said_in_one_line_and_the_last_outputs_stay(
    tmp_path, tiny_params, finished_tiny_project
):
    dest = copy_finished_project(finished_tiny_project, tmp_path / "project")
    project = Project(dest, tiny_params, project_env(dest))
    baseline = capture(project)
    rows = [
        kills.full_data_disk_case(project, tmp_path, by_hand=True),
        kills.full_data_disk_case(project, tmp_path, by_hand=False),
        *kills.read_only_data_case(project),
    ]
    for row in rows:
        if row["message"].startswith("not run:"):
            pytest.skip(row["message"])
        assert row["clear"], row
        assert not row.get("lost"), row
    assert capture(project) == baseline
