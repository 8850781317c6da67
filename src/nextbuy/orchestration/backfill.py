"""``nextbuy airflow backfill``: past days of a DAG on the running ``make airflow``, one day at a
time in date order, each day's logical date its data snapshot.

What it does beyond ``airflow backfill create``, and why:

* it unpauses the DAG first: Airflow starts no run of a backfill while its DAG is paused (every
  DAG here starts paused), and unpausing starts nothing by itself here (the project's timetable);
* ``--max-active-runs 1``: every run works in the one Airflow workspace, so two days must not
  interleave their stages; Airflow then runs the days in logical-date order;
* a run's conf carries the preset (``{"preset": "presets/online-retail.yaml"}``, the form's
  ``preset`` field), checked here before anything is created;
* SQLite answers "database is locked" while the scheduler writes (a create right after
  ``make airflow`` starts): the create is retried, after ``--reprocess-behavior none`` leaves
  the days it already created alone.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

from nextbuy.orchestration.names import MONITORING_DAG_ID, TRAINING_DAG_ID
from nextbuy.preset_files import read_mapping

BACKFILL_DAGS = (TRAINING_DAG_ID, MONITORING_DAG_ID)  # the DAGs whose runs take a preset
LOCKED = "database is locked"
ATTEMPTS = 4
RETRY_WAIT_S = 15.0


class BackfillError(ValueError):
    """What makes a backfill impossible, said in one line."""


def run_conf(project: Path, preset: str | None, reason: str | None) -> dict[str, str]:
    """The conf each day's run gets; the preset must be a readable file of the project."""
    conf: dict[str, str] = {}
    if preset:
        path = Path(preset)
        if path.is_absolute() or ".." in path.parts:
            raise BackfillError(
                f"--preset {preset}: give it relative to the project, e.g. presets/online-retail.yaml"
            )
        try:
            read_mapping(project / path)
        except (OSError, ValueError) as err:
            raise BackfillError(f"--preset {preset}: {err}") from None
        conf["preset"] = path.as_posix()
    if reason:
        conf["reason"] = reason
    return conf


def days(start: str, end: str) -> tuple[dt.date, dt.date]:
    """The first and last logical date, as dates (one line naming the bad one otherwise)."""
    parsed = []
    for flag, text in (("--from", start), ("--to", end)):
        try:
            parsed.append(dt.date.fromisoformat(text))
        except ValueError:
            raise BackfillError(f"{flag} {text!r} is not a date such as 2011-09-01") from None
    if parsed[0] > parsed[1]:
        raise BackfillError(f"--from {start} is after --to {end}")
    return parsed[0], parsed[1]


def airflow_commands(dag_id: str, first: dt.date, last: dt.date, conf: dict[str, str]) -> list[list[str]]:
    """The Airflow CLI calls, in order: unpause, then create the backfill."""
    airflow = [sys.executable, "-m", "airflow"]
    return [
        [*airflow, "dags", "unpause", dag_id],
        [
            *airflow,
            "backfill",
            "create",
            "--dag-id",
            dag_id,
            "--from-date",
            first.isoformat(),
            "--to-date",
            last.isoformat(),
            "--max-active-runs",
            "1",
            "--reprocess-behavior",
            "none",
            "--dag-run-conf",
            json.dumps(conf),
        ],
    ]


def backfill(
    project: Path,
    dag_id: str,
    start: str,
    end: str,
    preset: str | None,
    reason: str | None,
    env: dict[str, str],
    wait_s: float = RETRY_WAIT_S,
) -> int:
    """Create the backfill on the project's Airflow (``env``: its AIRFLOW_HOME); the exit status."""
    if dag_id not in BACKFILL_DAGS:
        raise BackfillError(f"--dag {dag_id}: one of {', '.join(BACKFILL_DAGS)}")
    if not (Path(env["AIRFLOW_HOME"]) / "airflow.db").exists():
        raise BackfillError(f"no Airflow database under {env['AIRFLOW_HOME']}: start `make airflow` first")
    first, last = days(start, end)
    conf = run_conf(project, preset, reason)
    for command in airflow_commands(dag_id, first, last, conf):
        for attempt in range(1, ATTEMPTS + 1):
            done = subprocess.run(command, env=env, cwd=project, capture_output=True, text=True)
            if done.returncode == 0 or LOCKED not in done.stdout + done.stderr or attempt == ATTEMPTS:
                break
            print(f"  the Airflow database is busy ({LOCKED}); again in {wait_s:.0f} s", flush=True)
            time.sleep(wait_s)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            print(
                f"`{' '.join(command[2:5])} ...` exited {done.returncode}:",
                *tail,
                sep="\n  ",
                file=sys.stderr,
            )
            return done.returncode
    n = (last - first).days + 1
    print(
        f"{dag_id}: {n} day(s) {first} .. {last} queued, one at a time in date order"
        + (f", preset {conf['preset']}" if "preset" in conf else "")
        + "; each run's verdict: its gate task's log, and `dvc exp show` (one experiment per run)"
    )
    return 0
