"""The stop cases start a make target as a terminal starts a foreground job: Ctrl-C reaches it
even when the bench itself runs in the background with SIGINT ignored."""

from __future__ import annotations

import signal
import sys
from types import SimpleNamespace

from nextbuy.bench.faults import kills

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
