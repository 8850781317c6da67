"""Training's progress bar: on a terminal a live tqdm bar; off one (DVC's output, an Airflow
task log, a container's log) one whole line as each epoch starts and then one per
``LOG_INTERVAL_S`` while its steps complete (a single step longer than that is silent until it
ends), naming the phase and epoch, the time spent and an estimate of the time left, so a slow
run shows it is alive."""

from __future__ import annotations

import contextlib
import contextvars
import sys
import time
from collections.abc import Iterator
from typing import TextIO

from tqdm.auto import tqdm

LOG_INTERVAL_S = 30.0  # off a terminal: at most one line per epoch bar this often


class LineStream:
    """A stream for tqdm off a terminal: each refresh (tqdm's ``\\r``-led redraw) becomes one
    whole line, and the blank redraw that clears a finished bar is dropped. Log readers take
    output line by line, so a bar redrawn in place would otherwise show nothing until the end."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        for part in text.replace("\r", "\n").split("\n"):
            if part.strip():
                self.stream.write(part.rstrip() + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class TrainingClock:
    """Time spent training and, from the mean epoch so far, what the epochs still planned would
    take: every phase of one training (EM rounds, ensemble members) shares one clock, so the
    estimate covers the whole training, not the phase. An upper bound: a phase that early
    stopping ends sooner gives its unrun epochs back (:meth:`skip`)."""

    def __init__(self, epochs: int) -> None:
        self.epochs, self.done, self.started = int(epochs), 0, time.monotonic()

    def tick(self) -> None:
        """One epoch done."""
        self.done += 1

    def skip(self, epochs: int) -> None:
        """``epochs`` planned epochs that will not run (a phase stopped early)."""
        self.epochs -= max(int(epochs), 0)

    def describe(self) -> str:
        spent = time.monotonic() - self.started
        if self.done == 0:
            return f"{_clock(spent)} in"
        left = spent / self.done * max(self.epochs - self.done, 0)
        return f"{_clock(spent)} in, at most {_clock(left)} of training left"


# The clock of the training under way: its phases (each a BladeTraining) tick it.
ACTIVE_CLOCK: contextvars.ContextVar[TrainingClock | None] = contextvars.ContextVar("clock", default=None)


@contextlib.contextmanager
def one_training(epochs: int) -> Iterator[TrainingClock]:
    """Every BladeTraining started inside shares one clock of ``epochs`` planned epochs."""
    clock = TrainingClock(epochs)
    token = ACTIVE_CLOCK.set(clock)
    try:
        yield clock
    finally:
        ACTIVE_CLOCK.reset(token)


def epoch_bar(steps: int, desc: str, enabled: bool) -> tqdm:
    """The bar of one epoch's ``steps``: live on a terminal, a line every ``LOG_INTERVAL_S``
    (and one as it starts) off it."""
    live = sys.stderr.isatty()
    return tqdm(
        range(steps),
        desc=desc,
        leave=False,
        disable=not enabled,
        mininterval=0.1 if live else LOG_INTERVAL_S,
        file=sys.stderr if live else LineStream(sys.stderr),
    )
