"""Training's progress off a terminal: whole lines a log reader shows as they come, naming the
phase, the epoch, the time spent and an estimate of the time left."""

from __future__ import annotations

import io

from nextbuy.domain.graph.blade import progress


def test_each_redraw_becomes_a_line_and_the_clearing_redraw_is_dropped():
    out = io.StringIO()
    stream = progress.LineStream(out)
    stream.write("\rEM round 1/2: epoch 3/40:   0%|  | 0/46")
    stream.write("\rEM round 1/2: epoch 3/40:  50%|# | 23/46")
    stream.write("\r" + " " * 60 + "\r")
    assert out.getvalue().splitlines() == [
        "EM round 1/2: epoch 3/40:   0%|  | 0/46",
        "EM round 1/2: epoch 3/40:  50%|# | 23/46",
    ]


def test_one_clock_estimates_what_is_left_of_the_whole_training(monkeypatch):
    """Two EM rounds of 20 epochs: after 4 epochs of 20 s the estimate covers the 36 left of
    both rounds, not the 16 of the first; a round stopped early gives its epochs back."""
    now = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    clock = progress.TrainingClock(epochs=2 * 20)
    assert clock.describe() == "0m00s in"
    for _ in range(4):
        now[0] += 20.0
        clock.tick()
    assert clock.describe() == "1m20s in, at most 12m00s of training left"
    clock.skip(16)  # the first round stopped early after its 4 epochs
    assert clock.describe() == "1m20s in, at most 6m40s of training left"
    now[0] += 36 * 20.0 * 10
    assert "h" in clock.describe()


def test_off_a_terminal_the_bar_writes_lines_at_a_steady_pace(monkeypatch, capsys):
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False, raising=False)
    bar = progress.epoch_bar(3, "member 1/4: epoch 1/2 (0m00s in)", enabled=True)
    assert bar.mininterval == progress.LOG_INTERVAL_S
    for _ in bar:
        pass
    bar.close()
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert lines
    assert lines[0].startswith("member 1/4: epoch 1/2 (0m00s in)")
    assert all("\r" not in line for line in lines)
