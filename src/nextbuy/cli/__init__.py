"""Command line: one command per stage (what dvc.yaml and the Airflow DAG call),
plus summary, registry actions, Airflow and benchmarks.

Start-up stays light (no pandas, torch or mlflow): heavy modules are imported by
the command that needs them.
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
from nextbuy.cli.bench import BENCHES
from nextbuy.cli.common import app
from nextbuy.cli.stages import STAGE_LIST, STAGES
from nextbuy.constants import ALERT_EXIT_CODE

__all__ = [
    "ALERT_EXIT_CODE",
    "BENCHES",
    "STAGES",
    "STAGE_LIST",
    "app",
    "bench",
    "docs",
    "models",
    "releases",
    "serving",
    "stages",
]
