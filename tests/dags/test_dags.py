"""The Airflow DAGs (dags/): they load, they are thin, and ``dag.test()`` runs the real
stages in a temporary git + DVC copy of the project on the tiny simulated store.

Airflow reads AIRFLOW_HOME, the DAGs folder and its database URL when it is first
imported, so every test that touches Airflow goes through the module fixture
``airflow_project``, which points those (and MLflow) at the temporary copy before
the first import and puts the environment back after the module.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from nextbuy import orchestration as orc
from tests.conftest import ROOT, TINY_PARAMS
from tests.helpers import project_copy, project_env

DAGS = ROOT / "dags"
DAG_FILES = sorted(DAGS.glob("*.py"))
HEAVY = {"torch", "pandas", "numpy", "sklearn", "scipy", "mlflow", "torch_geometric"}
TRAINING_ORDER = ["set_params", *orc.TRAINING_STAGES, "gate", "release", "restore_params"]
MONITORING_ORDER = ["set_params", *orc.MONITORING_STAGES, "check_alerts", "retrain", "no_retrain", "restore_params"]
# Tiny store plus a short month of traffic the monitor can judge (volumes as in tests/stages/test_monitor.py).
PARAMS = {**TINY_PARAMS, "traffic": {"days": 20, "impressions_per_day": 3000}, "monitor": {"min_volume": 200}}
DAY = datetime(2026, 11, 15, tzinfo=timezone.utc)  # on or after the DAG's start_date
DRIFT_DRILL = {"traffic.drift.kind": "bucket_shift", "traffic.drift.bucket": 1, "traffic.drift.start_day": 8,
               "traffic.drift.odds_multiplier": 0.2}


# --- thin DAG files ---------------------------------------------------------------------------------------

def _module_level_imports(tree: ast.AST) -> set[str]:
    """Root names imported by code that runs when the file is parsed (not inside functions)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.Import):
                found.update(a.name.split(".")[0] for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module:
                found.add(child.module.split(".")[0])
            visit(child)

    visit(tree)
    return found


@pytest.mark.parametrize("path", [*DAG_FILES, ROOT / "src" / "nextbuy" / "orchestration.py"], ids=lambda p: p.name)
def test_no_heavy_import_at_parse_time(path):
    imported = _module_level_imports(ast.parse(path.read_text()))
    assert not imported & HEAVY, f"{path.name} imports {imported & HEAVY} at module level"


def test_parsing_the_dags_loads_no_ml_library(tmp_path):
    code = ("import sys\nfrom airflow.dag_processing.dagbag import DagBag\n"
            f"bag = DagBag(dag_folder={str(DAGS)!r})\nassert not bag.import_errors, bag.import_errors\n"
            f"print(sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules))\n")
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


# --- run-only params and the workspace lock (no Airflow) --------------------------------------------------

def test_training_overrides_from_form_and_logical_date():
    form = {"target_precision": 0.25, "epochs": None, "source": None, "graph_path": None,
            "overrides": {"train.lr": 0.005, "thresholds.target_precision": 0.4}}
    snapshot = orc.snapshot_iso(datetime(2026, 3, 1, 6, 30, tzinfo=timezone(timedelta(hours=2))))
    assert snapshot == "2026-03-01T04:30:00"
    assert orc.training_overrides(form, snapshot) == {
        "ingest.snapshot": snapshot, "thresholds.target_precision": 0.4, "train.lr": 0.005}
    assert orc.training_overrides({}, None) == {}


def test_apply_overrides_sets_dotted_keys_on_a_copy():
    params = {"train": {"epochs": 4}, "ingest": {"simulator": {"n_products": 10}}}
    out = orc.apply_overrides(params, {"train.epochs": 1, "ingest.simulator.seed_extra": 3, "traffic.drift.kind": "x"})
    assert out == {"train": {"epochs": 1}, "ingest": {"simulator": {"n_products": 10, "seed_extra": 3}},
                   "traffic": {"drift": {"kind": "x"}}}
    assert params["train"]["epochs"] == 4
    with pytest.raises(ValueError, match="not a section"):
        orc.apply_overrides(params, {"train.epochs.x": 1})


def _project(tmp_path: Path, text: str = "# the knobs\ntrain:\n  epochs: 4\n") -> Path:
    (tmp_path / "params.yaml").write_text(text)
    return tmp_path


def test_acquire_and_restore_put_back_the_exact_file(tmp_path):
    project = _project(tmp_path)
    original = (project / "params.yaml").read_text()
    owner = {"dag_id": "d", "run_id": "r1"}
    params = orc.acquire_params(project, owner, {"train.epochs": 1}, lambda o: True)
    assert params == {"train": {"epochs": 1}}
    assert yaml.safe_load((project / "params.yaml").read_text()) == {"train": {"epochs": 1}}
    # A retry of the same run starts again from the original, not from its own overrides.
    assert orc.acquire_params(project, owner, {"train.epochs": 2}, lambda o: True) == {"train": {"epochs": 2}}
    assert orc.restore_params(project, {"dag_id": "d", "run_id": "other"}).endswith("untouched")
    assert orc.restore_params(project, owner) == "params.yaml restored"
    assert (project / "params.yaml").read_text() == original and not (project / orc.BACKUP_FILE).exists()
    assert orc.restore_params(project, owner).startswith("no params backup")


def test_a_live_run_holds_the_workspace_a_dead_one_does_not(tmp_path):
    project = _project(tmp_path)
    original = (project / "params.yaml").read_text()
    first, second = {"dag_id": "d", "run_id": "r1"}, {"dag_id": "e", "run_id": "r2"}
    orc.acquire_params(project, first, {"train.epochs": 1}, lambda o: True)
    assert orc.acquire_params(project, second, {"train.epochs": 2}, lambda o: True) is None  # wait
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["epochs"] == 1
    # The holder died without its teardown: its backup is restored, then the new run takes over.
    assert orc.acquire_params(project, second, {"train.epochs": 2}, lambda o: False) == {"train": {"epochs": 2}}
    assert orc.read_backup(project)["owner"] == second
    orc.restore_params(project, second)
    assert (project / "params.yaml").read_text() == original


def test_a_running_holder_is_live_whatever_form_its_state_takes(airflow_project):
    from airflow.sdk.api.datamodels._generated import DagRunState

    class TI:
        def __init__(self, state):
            self.state = state

        def get_dagrun_state(self, dag_id, run_id):
            if self.state is None:
                raise RuntimeError("no such run")
            return self.state

    owner = {"dag_id": "d", "run_id": "r"}
    for state, live in ((DagRunState.RUNNING, True), (DagRunState.QUEUED, True), ("running", True),
                        (DagRunState.SUCCESS, False), (DagRunState.FAILED, False), (None, False)):
        assert orc._is_live({"ti": TI(state)})(owner) is live, state


def test_invalid_overrides_fail_before_anything_is_written(tmp_path):
    project = _project(tmp_path)
    original = (project / "params.yaml").read_text()
    for bad in ({"train.epoch": 3}, {"train.epochs": 0}, {"trian.epochs": 3}):
        with pytest.raises(ValueError, match="invalid run overrides"):
            orc.acquire_params(project, {"dag_id": "d", "run_id": "r"}, bad, lambda o: True)
        assert (project / "params.yaml").read_text() == original and not (project / orc.BACKUP_FILE).exists()


def test_monitoring_pins_ingest_to_the_last_ingest_in_dvc_lock(tmp_path):
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"stages": {"ingest": {"params": {"params.yaml": {
        "ingest": {"seed": 3, "snapshot": "2026-11-15T00:00:00"}}}}}}))
    out = orc.monitoring_overrides(tmp_path, {"overrides": {"traffic.days": 5}})
    assert out == {"ingest": {"seed": 3, "snapshot": "2026-11-15T00:00:00"}, "traffic.days": 5}
    assert orc.monitoring_overrides(tmp_path / "nowhere", {}) == {}


def test_alert_exit_code_matches_the_cli():
    from nextbuy.cli import ALERT_EXIT_CODE

    assert orc.ALERT_EXIT_CODE == ALERT_EXIT_CODE


# --- Airflow ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def airflow_project(tmp_path_factory):
    """A temporary git + DVC copy of the project (tiny params) with its own AIRFLOW_HOME
    (SQLite), DAGs folder and MLflow store; the environment is restored after the module."""
    if "airflow.settings" in sys.modules:
        pytest.skip("Airflow was configured before this module could point it at a temporary home")
    tmp = tmp_path_factory.mktemp("airflow")
    dest = project_copy(tmp, PARAMS)
    env = project_env(dest)
    env.update({"AIRFLOW_HOME": str(tmp / "airflow-home"), "AIRFLOW__CORE__DAGS_FOLDER": str(dest / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__PARALLELISM": "2",
                "AIRFLOW__API__HOST": "127.0.0.1", orc.PROJECT_DIR_ENV: str(dest)})
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            if os.environ.get(key) != value:
                mp.setenv(key, value)
        # Before this process imports Airflow: it must find the tables there.
        migrate = subprocess.run(["airflow", "db", "migrate"], capture_output=True, text=True, timeout=300)
        assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-2000:]
        yield dest


def _dagbag(folder: Path):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(folder))
    assert not bag.import_errors, bag.import_errors
    return bag


def test_dagbag_loads_both_dags_in_order(airflow_project):
    bag = _dagbag(DAGS)
    assert set(bag.dag_ids) == {orc.TRAINING_DAG_ID, orc.MONITORING_DAG_ID}
    training, monitoring = bag.dags[orc.TRAINING_DAG_ID], bag.dags[orc.MONITORING_DAG_ID]
    assert [t.task_id for t in training.topological_sort()] == TRAINING_ORDER
    assert [t.task_id for t in monitoring.topological_sort()] == MONITORING_ORDER
    for dag, stages in ((training, orc.TRAINING_STAGES), (monitoring, orc.MONITORING_STAGES)):
        assert dag.max_active_runs == 1
        for stage in stages:
            task = dag.get_task(stage)
            assert task.pool == orc.POOL and task.retries >= 1 and task.retry_exponential_backoff
            assert f"dvc repro --single-item {stage}" in task.bash_command
        for task_id in ("set_params", "restore_params"):
            assert dag.get_task(task_id).retries == 0
        assert dag.get_task("set_params").is_setup and dag.get_task("restore_params").is_teardown
    assert training.catchup and not monitoring.catchup
    assert [o.uri for o in training.get_task("release").outlets] == [orc.CHAMPION_ASSET_URI]
    assert set(training.params) >= {"target_precision", "epochs", "source", "graph_path", "overrides", "reason"}
    assert all(training.params[k] is None for k in ("target_precision", "epochs", "source", "graph_path"))
    assert monitoring.get_task("retrain").trigger_dag_id == orc.TRAINING_DAG_ID


def _run(dag, logical_date: datetime | None = None, conf: dict | None = None) -> tuple[str, dict[str, str], str]:
    """dag.test(); returns (run state, {task_id: state}, run_id)."""
    from airflow.utils.session import create_session

    dr = dag.test(run_conf=conf, **({"logical_date": logical_date} if logical_date else {}))
    def name(state) -> str | None:
        return None if state is None else str(getattr(state, "value", state))

    with create_session() as session:
        tis = dr.get_task_instances(session=session)
        states = {ti.task_id: name(ti.state) for ti in tis}
        tries = {ti.task_id: ti.try_number for ti in tis}
    return name(dr.state), {**states, "_tries": tries}, dr.run_id


def _xcom(dag_id: str, run_id: str, task_id: str, key: str = "return_value"):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(select(XComModel).where(XComModel.dag_id == dag_id, XComModel.run_id == run_id,
                                                      XComModel.task_id == task_id, XComModel.key == key)).first()
        return None if row is None else XComModel.deserialize_value(row)


def _asset_events(run_id: str) -> list[dict]:
    """Extras of the champion Asset events the run emitted."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(AssetEvent).join(AssetModel, AssetModel.id == AssetEvent.asset_id).where(
            AssetModel.uri == orc.CHAMPION_ASSET_URI, AssetEvent.source_run_id == run_id)).all()
        return [dict(r.extra) for r in rows]


@pytest.fixture(scope="module")
def trained(airflow_project):
    """One training run on the tiny store, form fields and free overrides set."""
    project = airflow_project
    original = (project / "params.yaml").read_text()
    dag = _dagbag(project / "dags").dags[orc.TRAINING_DAG_ID]
    conf = {"target_precision": 0.25, "overrides": {"train.epochs": 1}, "reason": "test run"}
    state, tasks, run_id = _run(dag, logical_date=DAY, conf=conf)
    return project, original, state, tasks, run_id


@pytest.mark.slow
def test_training_dag_runs_the_stages_and_releases_a_champion(trained):
    from mlflow.tracking import MlflowClient

    project, original, state, tasks, run_id = trained
    assert state == "success", tasks
    assert all(tasks[t] == "success" for t in TRAINING_ORDER), tasks
    assert (project / "params.yaml").read_text() == original and not (project / orc.BACKUP_FILE).exists()

    overrides = _xcom(orc.TRAINING_DAG_ID, run_id, "set_params")["overrides"]
    assert overrides == {"ingest.snapshot": "2026-11-15T00:00:00", "thresholds.target_precision": 0.25,
                         "train.epochs": 1}
    # dvc.lock is the record of what ran: the run's values, not params.yaml's.
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert set(orc.TRAINING_STAGES) <= set(lock)
    assert lock["ingest"]["params"]["params.yaml"]["ingest"]["snapshot"] == "2026-11-15T00:00:00"
    assert lock["train"]["params"]["params.yaml"]["train"]["epochs"] == 1

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("nextbuy", "champion")
    assert champion.tags["passed"] == "true" and champion.tags["lineage.airflow_run_id"] == run_id
    lineage = json.loads(champion.tags["lineage.params"])
    assert lineage["thresholds"]["target_precision"] == 0.25 and lineage["ingest"]["snapshot"] == "2026-11-15T00:00:00"
    train_run = client.search_runs([client.get_experiment_by_name("nextbuy").experiment_id],
                                   "tags.stage = 'train'")[0]
    assert train_run.data.params["train.epochs"] == "1"
    assert _xcom(orc.TRAINING_DAG_ID, run_id, "gate")["passed"] is True
    events = _asset_events(run_id)
    assert len(events) == 1 and str(events[0]["version"]) == str(champion.version) == "1"


@pytest.mark.slow
def test_rerunning_a_day_is_idempotent(trained):
    """Same logical date, same overrides: dvc repro finds every stage up to date."""
    project, original, *_ = trained
    lock_before = (project / "dvc.lock").read_text()
    dag = _dagbag(project / "dags").dags[orc.TRAINING_DAG_ID]
    state, tasks, _ = _run(dag, logical_date=DAY, conf={"target_precision": 0.25, "overrides": {"train.epochs": 1}})
    assert state == "success", tasks
    assert (project / "dvc.lock").read_text() == lock_before
    assert (project / "params.yaml").read_text() == original


@pytest.mark.slow
def test_a_failing_stage_fails_the_run_after_a_retry_and_params_come_back(trained, capfd):
    project, original, *_ = trained
    dag = _dagbag(project / "dags").dags[orc.TRAINING_DAG_ID]
    ingest = dag.get_task("ingest")
    ingest.retries, ingest.retry_delay, ingest.max_retry_delay = 1, timedelta(seconds=1), timedelta(seconds=2)
    missing = project / "no-such-graph.csv"
    state, tasks, _ = _run(dag, logical_date=DAY + timedelta(days=1),
                           conf={"source": "edge_list", "graph_path": str(missing)})
    assert state == "failed", tasks
    assert tasks["ingest"] == "failed" and tasks["_tries"]["ingest"] == 2  # retried once, then failed
    assert all(tasks[t] == "upstream_failed" for t in [*orc.TRAINING_STAGES[1:], "gate", "release"]), tasks
    assert tasks["restore_params"] == "success"
    assert (project / "params.yaml").read_text() == original and not (project / orc.BACKUP_FILE).exists()
    # The stage's own error is in the task log; the workspace is back to what dvc.lock records.
    assert "no-such-graph.csv" in capfd.readouterr().out
    assert (project / "data" / "ingested").is_dir()


@pytest.mark.slow
def test_monitoring_without_alerts_ends_quietly(trained):
    project, original, *_ = trained
    dag = _dagbag(project / "dags").dags[orc.MONITORING_DAG_ID]
    state, tasks, _ = _run(dag)
    assert state == "success", tasks
    assert tasks["check_alerts"] == "success" and tasks["no_retrain"] == "success" and tasks["retrain"] == "skipped"
    assert json.loads((project / "monitoring" / "alerts.json").read_text())["alerts"] == []
    assert (project / "params.yaml").read_text() == original


@pytest.mark.slow
def test_monitoring_alert_triggers_retraining_with_the_reason(trained):
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    project, original, *_ = trained
    dag = _dagbag(project / "dags").dags[orc.MONITORING_DAG_ID]
    state, tasks, run_id = _run(dag, conf={"overrides": DRIFT_DRILL})
    assert state == "success", tasks
    assert tasks["retrain"] == "success" and tasks["no_retrain"] == "skipped", tasks
    fired = json.loads((project / "monitoring" / "alerts.json").read_text())["alerts"]
    assert fired and {a["bucket"] for a in fired} == {1}
    with create_session() as session:
        runs = DagRun.find(dag_id=orc.TRAINING_DAG_ID, run_id=f"retrain__{run_id}", session=session)
        assert len(runs) == 1
        reason = runs[0].conf["reason"]
    assert run_id in reason and fired[0]["message"] in reason
    assert (project / "params.yaml").read_text() == original


@pytest.mark.slow
def test_a_refused_candidate_skips_gate_and_release_without_failing(trained):
    """Gate drill (shuffled labels): deploy refuses, the gate is skipped with the reasons,
    nothing is released, the run stays green. Last: it leaves the refused model in the workspace."""
    project, original, *_ = trained
    dag = _dagbag(project / "dags").dags[orc.TRAINING_DAG_ID]
    conf = {"target_precision": 0.25, "overrides": {"train.epochs": 1, "train.shuffle_labels": True}}
    state, tasks, run_id = _run(dag, logical_date=DAY, conf=conf)
    assert state == "success", tasks
    assert tasks["deploy"] == "success" and tasks["gate"] == "skipped" and tasks["release"] == "skipped", tasks
    assert tasks["_tries"]["gate"] == 1 and tasks["restore_params"] == "success"
    verdict = json.loads((project / "metrics" / "deploy.json").read_text())
    assert not verdict["passed"] and str(verdict["champion_version"]) == "1"
    assert _asset_events(run_id) == []
    assert (project / "params.yaml").read_text() == original


def _alerting_project(tmp_path: Path, alerts: list[dict]) -> Path:
    (tmp_path / "monitoring").mkdir(parents=True)
    (tmp_path / orc.ALERTS_FILE).write_text(json.dumps({"now": "2026-11-21", "alerts": alerts}))
    return tmp_path


class _TI:
    def __init__(self):
        self.pushed: dict = {}

    def xcom_push(self, key, value):
        self.pushed[key] = value


class _DagRun:
    def __init__(self, run_type):
        self.run_type = run_type


def test_branch_retrains_on_alerts_except_right_after_a_release(tmp_path):
    project = _alerting_project(tmp_path, [{"window_start": "2026-11-10", "message": "bucket 1: positivity low",
                                            "bucket": 1}])
    ti = _TI()
    context = {"run_id": "scheduled__x", "ti": ti, "dag_run": _DagRun("scheduled")}
    assert orc.branch_on_alerts_task(project, context) == orc.RETRAIN_TASK
    assert "bucket 1: positivity low" in ti.pushed["retrain_conf"]["reason"]
    after_release = {"run_id": "asset_triggered__x", "ti": _TI(), "dag_run": _DagRun("asset_triggered")}
    assert orc.branch_on_alerts_task(project, after_release) == orc.NO_RETRAIN_TASK
    quiet = _alerting_project(tmp_path / "quiet", [])
    assert orc.branch_on_alerts_task(quiet, {"run_id": "m", "ti": _TI(), "dag_run": _DagRun("manual")}) == \
        orc.NO_RETRAIN_TASK
