"""The first trigger, as a user makes it, with the real scheduler: ``nextbuy airflow
standalone`` on a copy of the project whose checkout already ran ``dvc repro``;
over the REST API the training DAG is unpaused and triggered with a changed param.

The run must succeed on every task's first try, no scheduled (catch-up or missed
tick) run may appear beside it, and the checkout's ``dvc status``, params.yaml and
dvc.lock are exactly what they were: the run happened in the Airflow workspace
and is listed as a DVC experiment. The form's epochs and snapshot are the checkout's own (its
snapshot is null: the simulator's), so every stage before deploy is up to date in the workspace
(restored from the shared DVC cache, not run again); deploy runs for real
under an AUC floor no model meets (``deploy.min_auc: 1.0``) and refuses, the gate and the
release are skipped without failing the run, nothing is released,
so no release starts the monitoring DAG either and any monitoring run would be one that
unpausing started. (Every stage run by Airflow, and a release with its Asset event:
tests/dags/test_dags.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nextbuy import procs
from nextbuy.orchestration.airflow_api import AirflowApi
from nextbuy.orchestration.names import MONITORING_DAG_ID, POOL, TRAINING_DAG_ID
from nextbuy.orchestration.workspace import experiment_name, workspace_dir
from tests.conftest import TINY_PARAMS
from tests.helpers import copy_finished_project, project_env

pytestmark = pytest.mark.slow
START_TIMEOUT = 420  # airflow standalone on a loaded 2-core host: minutes
RUN_TIMEOUT = 900


def _checkout_state(project: Path, env: dict) -> dict:
    status = subprocess.run(
        ["dvc", "status", "--json"], cwd=project, env=env, capture_output=True, text=True, timeout=120
    )
    return {
        "dvc_status": json.loads(status.stdout or "{}"),
        "params": (project / "params.yaml").read_text(),
        "dvc.lock": (project / "dvc.lock").read_text(),
    }


@pytest.fixture(scope="module")
def airflow_server(tmp_path_factory, finished_tiny_project):
    tmp = tmp_path_factory.mktemp("scheduler")
    project = copy_finished_project(finished_tiny_project, tmp)  # its checkout ran dvc repro
    env = project_env(project)
    port = procs.free_port()
    env.update({"AIRFLOW_HOME": str(tmp / "airflow-home"), "AIRFLOW__API__PORT": str(port)})
    env.pop("AIRFLOW__CORE__DAGS_FOLDER", None)
    log = tmp / "standalone-launcher.log"
    server = procs.GroupServer(
        [str(Path(sys.executable).parent / "nextbuy"), "airflow", "standalone", "--port", str(port)],
        port,
        env={**env, "NEXTBUY_PROJECT_DIR": str(project)},
        log_path=log,
        start_timeout=START_TIMEOUT,
        stop_timeout=60,
    )
    server.is_ready = lambda: "Airflow UI:" in server.log()  # the launcher prints it once all answer
    server.start()
    try:
        logins = json.loads(
            (tmp / "airflow-home" / "simple_auth_manager_passwords.json.generated").read_text()
        )
        user, password = next(iter(logins.items()))
        yield project, env, AirflowApi(server.url, user, password), server
    finally:
        assert server.stop(), "processes of airflow standalone left behind"


def test_a_manual_trigger_on_an_unpaused_dag_runs_first_try_and_leaves_the_checkout_clean(airflow_server):
    project, env, api, server = airflow_server
    before = _checkout_state(project, env)
    assert before["dvc_status"] == {}, "the checkout's dvc repro should have left it up to date"
    api.wait_for_dag(TRAINING_DAG_ID, START_TIMEOUT)
    api.wait_for_dag(MONITORING_DAG_ID, START_TIMEOUT)
    assert api.get(f"/api/v2/pools/{POOL}")["slots"] == 1  # the launcher made it: one stage at a time
    for dag_id in (TRAINING_DAG_ID, MONITORING_DAG_ID):  # a user unpauses both
        api.patch(f"/api/v2/dags/{dag_id}", {"is_paused": False})
    # A run's snapshot is its logical date unless the overrides say otherwise: here the checkout's.
    same_data = {"ingest.snapshot": TINY_PARAMS["ingest"]["snapshot"]}
    conf = {"epochs": TINY_PARAMS["train"]["epochs"], "overrides": {**same_data, "deploy.min_auc": 1.0}}
    run = api.post(f"/api/v2/dags/{TRAINING_DAG_ID}/dagRuns", {"logical_date": None, "conf": conf})
    run = api.wait_for_run(TRAINING_DAG_ID, run["dag_run_id"], RUN_TIMEOUT)
    tis = api.task_instances(TRAINING_DAG_ID, run["dag_run_id"])
    tries = {ti["task_id"]: (ti["state"], ti["try_number"]) for ti in tis}
    assert run["state"] == "success", (tries, server.log())
    # Every task ran on its first try; gate and release are skipped (deploy refused), never tried.
    assert all(t <= 1 for _, t in tries.values()), f"a task needed a retry: {tries}"
    skipped = {"gate", "release"}
    assert {t for t, (s, _) in tries.items() if s == "skipped"} == skipped, tries
    assert all(s == "success" for t, (s, _) in tries.items() if t not in skipped), tries
    # Unpausing started nothing by itself: the only training run is ours, and no monitoring run.
    runs = api.get(f"/api/v2/dags/{TRAINING_DAG_ID}/dagRuns")["dag_runs"]
    assert [r["dag_run_id"] for r in runs] == [run["dag_run_id"]]
    assert api.get(f"/api/v2/dags/{MONITORING_DAG_ID}/dagRuns")["dag_runs"] == []
    # The checkout is exactly as it was; the run is a DVC experiment it lists.
    assert _checkout_state(project, env) == before
    exps = subprocess.run(["dvc", "exp", "list"], cwd=project, env=env, capture_output=True, text=True)
    assert experiment_name(TRAINING_DAG_ID, run["dag_run_id"]) in exps.stdout
    workspace = workspace_dir(project)
    assert os.path.isdir(workspace / "data" / "ingested")
    # Only deploy ran: the workspace's record of every stage before it is the checkout's.
    ran = yaml.safe_load((workspace / "dvc.lock").read_text())["stages"]
    checkout = yaml.safe_load(before["dvc.lock"])["stages"]
    earlier = [s for s in ran if s != "deploy"]
    assert earlier, ran
    assert {s: ran[s] for s in earlier} == {s: checkout[s] for s in earlier}
    assert ran["deploy"]["params"]["params.yaml"]["deploy"]["min_auc"] == 1.0
    # Deploy judged the candidate against the checkout's champion and refused it on the floor;
    # nothing was released (no Asset event), and the workspace's params.yaml is back.
    verdict = json.loads((workspace / "metrics" / "deploy.json").read_text())
    assert not verdict["passed"]
    assert any(r.startswith("auc ") and "floor" in r for r in verdict["reasons"]), verdict["reasons"]
    assert str(verdict["champion_version"]) == "1"
    assert api.get("/api/v2/assets/events")["asset_events"] == []
    assert (workspace / "params.yaml").read_text() == before["params"]
