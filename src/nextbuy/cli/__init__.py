"""Command line: one command per stage (what dvc.yaml and the Airflow DAG call),
plus summary, registry actions, Airflow and benchmarks.

Start-up stays light (no pandas, torch or mlflow): each command imports what it runs inside
its own function. That is the one reason for the imports inside this package's functions: what
the CLI imports as it starts, every stage command runs, and dvc.yaml lists it among each
stage's deps (tests/test_dvc_yaml.py).
"""

from __future__ import annotations

# isort: off
# Registration order is help order: the stage commands (``cli.stages``), the champion's
# (``cli.releases``), serving and the UIs (``cli.serving``); then the groups, airflow (with the
# stages), models (the model catalogue, ``cli.models``) and bench (``cli.bench``); the
# documentation's generators last (``cli.docs``).
from nextbuy.cli import stages
from nextbuy.cli import releases
from nextbuy.cli import serving
from nextbuy.cli import models
from nextbuy.cli import bench
from nextbuy.cli import docs

# isort: on
import gc

from nextbuy.cli.bench import BENCHES
from nextbuy.cli.common import app
from nextbuy.cli.stages import STAGE_LIST, STAGES
from nextbuy.constants import ALERT_EXIT_CODE

# A nextbuy command is one batch job: it imports a few million long-lived objects (torch,
# MLflow, pandas, Evidently) and exits. At CPython's default first threshold (700 allocations)
# the collector ran eight full collections in a tiny training (a fifth of its CPU) and a
# quarter of a monitor run; every 10,000 allocations it ran none, and young garbage cycles
# still go within 10,000 allocations.
GC_THRESHOLDS = (10_000, 10, 10)


def main() -> None:
    """The ``nextbuy`` command: ``app`` with the collector set for one batch job."""
    gc.set_threshold(*GC_THRESHOLDS)
    app()


__all__ = [
    "ALERT_EXIT_CODE",
    "BENCHES",
    "GC_THRESHOLDS",
    "STAGES",
    "STAGE_LIST",
    "app",
    "bench",
    "docs",
    "main",
    "models",
    "releases",
    "serving",
    "stages",
]
