"""`nextbuy bench dag`: what Airflow costs on top of DVC.

The training stages on the tiny simulated store (presets/tiny.yaml over params.yaml,
as the tests use it), in two fresh temporary git copies of the project
(no dvc.lock, no outputs, no DVC cache: a full run in both), with the same
params (the DAG's snapshot written into the ``dvc repro`` copy too):

* ``dag_s``: ``dag.test()`` of ``nextbuy_training`` (Airflow imported, its SQLite
  database migrated and dag.test()'s in-process execution API started beforehand,
  the last timed apart as ``api_warmup_s``: a deployment's API server is already
  running): set_params, one ``dvc repro --single-item`` per stage, gate, release,
  restore_params;
* ``repro_s``: ``dvc repro deploy`` (the same stages in one DVC process).

``ratio = dag_s / repro_s`` (goal <= 1.3). The DAG run goes first so that any
cold-cache cost lands on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from nextbuy import yaml_io
from nextbuy.bench.project_copy import copy_project, project_env
from nextbuy.mlops import io
from nextbuy.orchestration.names import PROJECT_DIR_ENV, TRAINING, TRAINING_DAG_ID
from nextbuy.orchestration.params_lock import snapshot_iso
from nextbuy.orchestration.workspace import workspace_dir
from nextbuy.presets import params_with
from nextbuy.stage_list import dag_stages

LOGICAL_DATE = "2026-11-15T00:00:00+00:00"
TINY_PRESET = "presets/tiny.yaml"
DAG_SCRIPT = r"""
import json, subprocess, sys, time
from datetime import datetime
subprocess.run(["airflow", "db", "migrate"], check=True, capture_output=True)
from airflow.dag_processing.dagbag import DagBag
from airflow.utils.session import create_session
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
dag = bag.dags[sys.argv[3]]
# dag.test() runs tasks against an in-process execution API, built on first use (a deployment's
# API server is already up): start it here and time it apart.
started = time.perf_counter()
from airflow.sdk.execution_time.supervisor import InProcessTestSupervisor
assert InProcessTestSupervisor._api_client().get("health").status_code == 200  # app built and started
warmup = time.perf_counter() - started
started = time.perf_counter()
dr = dag.test(logical_date=datetime.fromisoformat(sys.argv[2]))
seconds = time.perf_counter() - started
with create_session() as session:
    tis = {ti.task_id: [str(getattr(ti.state, "value", ti.state)), ti.duration]
           for ti in dr.get_task_instances(session=session)}
state = str(getattr(dr.state, "value", dr.state))
print("BENCH-RESULT " + json.dumps({"seconds": seconds, "warmup": warmup, "state": state, "tasks": tis}))
"""


def tiny_params(root: Path) -> dict:
    """The tiny store: presets/tiny.yaml merged over the project's params.yaml."""
    return params_with(root / TINY_PRESET, root / "params.yaml")


def _env(project: Path, airflow_home: Path | None = None) -> dict[str, str]:
    env = project_env(project)
    if airflow_home is not None:
        env.update(
            {
                "AIRFLOW_HOME": str(airflow_home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(project / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__PARALLELISM": "2",
                PROJECT_DIR_ENV: str(project),
            }
        )
    return env


def time_dag(project: Path, airflow_home: Path) -> dict:
    args = [str(project / "dags"), LOGICAL_DATE, TRAINING_DAG_ID]
    out = subprocess.run(
        [sys.executable, "-c", DAG_SCRIPT, *args],
        cwd=project,
        env=_env(project, airflow_home),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("BENCH-RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"dag.test failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    result = json.loads(lines[-1].removeprefix("BENCH-RESULT "))
    if result["state"] != "success":
        raise RuntimeError(f"{TRAINING_DAG_ID} ended {result['state']}: {result['tasks']}")
    return result


def time_repro(project: Path) -> float:
    started = time.perf_counter()
    out = subprocess.run(
        ["dvc", "repro", "deploy"],
        cwd=project,
        env=_env(project),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"dvc repro failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    stages = dag_stages(project, TRAINING)
    ran = sum(f"Running stage '{s}'" in out.stdout for s in stages)
    if ran != len(stages):
        raise RuntimeError(f"dvc repro ran {ran} of the {len(stages)} training stages:\n{out.stdout[-3000:]}")
    return seconds


def run(out: Path, root: Path | None = None) -> dict:
    from datetime import datetime

    root = Path(root or os.environ.get(PROJECT_DIR_ENV) or Path.cwd()).resolve()
    params = tiny_params(root)
    snapshot = snapshot_iso(datetime.fromisoformat(LOGICAL_DATE))
    with tempfile.TemporaryDirectory(prefix="bench-dag-") as tmp:
        dag_project = copy_project(root, Path(tmp) / "dag", params)
        repro_project = copy_project(
            root, Path(tmp) / "repro", {**params, "ingest": {**params["ingest"], "snapshot": snapshot}}
        )
        dag = time_dag(dag_project, Path(tmp) / "airflow-home")
        repro_s = time_repro(repro_project)
        # Same work in both: the stage params dvc.lock recorded must match (the DAG's stages
        # run in the Airflow workspace, a worktree of the project: its dvc.lock is there).
        ran_in = (workspace_dir(dag_project), repro_project)
        locks = [yaml_io.load((p / "dvc.lock").read_text(), str(p / "dvc.lock"))["stages"] for p in ran_in]
        same = all(locks[0][s]["params"] == locks[1][s]["params"] for s in dag_stages(root, TRAINING))
    figures = {
        "dag_s": round(dag["seconds"], 2),
        "repro_s": round(repro_s, 2),
        "ratio": round(dag["seconds"] / repro_s, 3),
        "overhead_s": round(dag["seconds"] - repro_s, 2),
        # one-time start of dag.test()'s in-process execution API (not part of dag_s)
        "api_warmup_s": round(dag["warmup"], 2),
        "ratio_with_warmup": round((dag["seconds"] + dag["warmup"]) / repro_s, 3),
        "same_params": same,
        "task_s": {k: None if v[1] is None else round(v[1], 2) for k, v in dag["tasks"].items()},
        "logical_date": LOGICAL_DATE,
        "config": f"{TINY_PRESET} over params.yaml",
    }
    _print(figures)
    io.write_json(figures, out)
    return figures


def _print(f: dict) -> None:
    table = Table(title="bench dag: the training stages, tiny store, fresh copies")
    table.add_column("run")
    table.add_column("seconds", justify="right")
    table.add_row("dvc repro deploy", f"{f['repro_s']:.2f}")
    table.add_row("dag.test() nextbuy_training", f"{f['dag_s']:.2f}")
    table.add_row("ratio (goal <= 1.3)", f"{f['ratio']:.3f}")
    table.add_row("dag.test() in-process API start (once, apart)", f"{f['api_warmup_s']:.2f}")
    table.add_row("ratio counting that start", f"{f['ratio_with_warmup']:.3f}")
    for task_id, seconds in sorted(f["task_s"].items(), key=lambda kv: -(kv[1] or 0)):
        table.add_row(f"  task {task_id}", "-" if seconds is None else f"{seconds:.2f}")
    Console().print(table)
