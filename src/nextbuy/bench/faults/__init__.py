"""`nextbuy bench faults`: the fault matrix, run for real on the tiny store.

A fresh git copy of the project (presets/tiny.yaml over params.yaml) runs every stage
once; that state (params.yaml, dvc.lock, every output, the artifact store) is the
baseline each case starts from and is put back after it. Then:

* bad input (``cases.CASES``: params, real graph and log files, damaged upstream
  outputs): the stage runs as ``dvc repro`` and Airflow run it; a refusal is *clear* when
  the exit code is non-zero, no traceback is printed and the message names what the case
  says (file, column or key, offending rows); the stage's outputs must be byte-identical
  to the baseline afterwards — as ``make run`` and the Airflow tasks leave them: when a
  bare ``dvc repro`` lost them (DVC deletes outputs before it checks params.yaml), they run
  ``nextbuy restore-outputs``; such cases are counted apart as ``bare_dvc_lost``. A case
  whose convention is to clean (exact duplicate rows) must exit 0 with a warning that
  counts what it dropped.
* kill -9 of the stage's whole process group at several points of every stage (fractions
  of its measured run time), then ``make run`` as a user would run it: it must succeed, every
  output must be there, no registry version may be left incomplete without being marked
  orphaned, no MLflow run may stay RUNNING, and the champion must be complete; the same after
  DVC's rwlock or dvc.lock is left truncated (``recovery``).
* SIGTERM during deploy's registration and monitor's publishing, a file-size limit during
  train, and ``make mlflow-ui`` / ``make docs`` stopped (``kills``).
* malformed scoring requests to the champion served as ``make serve`` serves it: each
  must get its 4xx naming the problem, and the server must stay up; then serving under
  abuse (``serving``).
* a release, then params.yaml reverted (``release``).

JSON counts: ``cases`` (all), ``clear_errors`` (bad input and requests refused clearly,
or cleaned with a counted warning), ``silent_accepts`` (accepted with no word),
``tracebacks`` (a Python traceback or an HTTP 5xx), ``unclear`` (refused without naming
the problem), ``outputs_lost`` (a refusal that changed the stage's outputs; a kill after
which an output is missing), ``orphans`` (incomplete unmarked versions and RUNNING runs
after the recoveries), ``recovered`` (kills after which the recovery succeeded),
``server_down``, ``bare_dvc_lost`` — and one row per case.

The parts: ``base`` (what a case is), ``cases`` (the bad-input catalogue, with ``inputs``,
``events`` and ``requests``), ``project`` (the project copy, its state captured and put back),
``verdicts`` (judging, counts, the table), ``serving``, ``release``, ``recovery`` and ``kills``
(the cases that need a running project), and ``matrix`` (the run). This face holds what
``nextbuy bench faults`` calls (``run``) and what the tests use; the parts import one another,
never this face.
"""

from __future__ import annotations

from nextbuy.bench.faults.matrix import run, run_case, selected
from nextbuy.bench.faults.project import Project, capture
from nextbuy.bench.faults.recovery import KILL_POINTS
from nextbuy.bench.faults.verdicts import COUNTS, judge, judge_request, tally

__all__ = [
    "COUNTS",
    "KILL_POINTS",
    "Project",
    "capture",
    "judge",
    "judge_request",
    "run",
    "run_case",
    "selected",
    "tally",
]
