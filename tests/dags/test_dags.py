"""The Airflow DAGs (dags/): they load, they are thin, and ``dag.test()`` runs the real
stages in a temporary git + DVC copy of the project on the tiny simulated store.
(What the tasks call, nextbuy.orchestration, is tested in tests/orchestration/.)

Airflow reads AIRFLOW_HOME, the DAGs folder and its database URL when it is first
imported, so every test that touches Airflow goes through the module fixture
``airflow_project``, which points those (and MLflow) at the temporary copy before
the first import and puts the environment back after the module.
"""

from __future__ import annotations

import ast
import json
import os
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from nextbuy.config import merge
from nextbuy.constants import INPUT_ERROR_EXIT_CODE
from nextbuy.orchestration import batch, names, task_bodies
from nextbuy.orchestration.names import (
    BACKUP_FILE,
    BATCH_DAG_ID,
    BATCH_MANIFEST,
    MONITORING,
    MONITORING_DAG_ID,
    TRAINING,
    TRAINING_DAG_ID,
)
from nextbuy.orchestration.workspace import experiment_name, workspace_dir
from nextbuy.stage_list import dag_stages
from tests.conftest import ROOT, TINY_PARAMS
from tests.helpers import project_copy, project_env

DAGS = ROOT / "dags"
DAG_FILES = sorted(DAGS.glob("*.py"))
HEAVY = {"torch", "pandas", "numpy", "sklearn", "scipy", "mlflow", "torch_geometric"}
# The stages of each DAG: dvc.yaml's meta.dag, in file order.
TRAINING_STAGES, MONITORING_STAGES = dag_stages(ROOT, TRAINING), dag_stages(ROOT, MONITORING)
TRAINING_ORDER = ["set_params", *TRAINING_STAGES, "gate", "release", "restore_params"]
MONITORING_ORDER = [
    "set_params",
    *MONITORING_STAGES,
    "check_alerts",
    "retrain",
    "no_retrain",
    "restore_params",
]
BATCH_ORDER = ["resolve_champion", "batch_shard", "publish"]
# Tiny store plus a short month of traffic the monitor can judge (volumes as in tests/stages/test_monitor.py).
# Traffic seed 102, not params.yaml's 101: on this store 101's draw has one hot day (day 10, a few
# products converting 4 standard deviations above their true rates), which any honest monitor flags
# for some trained models (4 of 16 in a probe; 0 of 16 with 102 and 103), and the clean-week test
# would then pass or fail with the training seed.
PARAMS = merge(
    TINY_PARAMS,
    {"traffic": {"days": 20, "impressions_per_day": 3000, "seed": 102}, "monitor": {"min_volume": 200}},
)
DAY = datetime(2026, 11, 15, tzinfo=UTC)  # on or after the DAG's start_date
DRIFT_DRILL = {
    "traffic.drift.kind": "bucket_shift",
    "traffic.drift.bucket": 1,
    "traffic.drift.start_day": 8,
    "traffic.drift.odds_multiplier": 0.2,
}


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


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_no_heavy_import_at_parse_time(path):
    imported = _module_level_imports(ast.parse(path.read_text()))
    assert not imported & HEAVY, f"{path.name} imports {imported & HEAVY} at module level"


def test_parsing_the_dags_loads_no_ml_library(tmp_path):
    code = (
        "import sys\nfrom airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(DAGS)!r})\nassert not bag.import_errors, bag.import_errors\n"
        f"print(sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules))\n"
    )
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


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
    env.update(
        {
            "AIRFLOW_HOME": str(tmp / "airflow-home"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dest / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__API__HOST": "127.0.0.1",
            names.PROJECT_DIR_ENV: str(dest),
        }
    )
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
    assert set(bag.dag_ids) == {TRAINING_DAG_ID, MONITORING_DAG_ID, BATCH_DAG_ID}
    training, monitoring = bag.dags[TRAINING_DAG_ID], bag.dags[MONITORING_DAG_ID]
    assert [t.task_id for t in training.topological_sort()] == TRAINING_ORDER
    assert [t.task_id for t in monitoring.topological_sort()] == MONITORING_ORDER
    for dag, stages in ((training, TRAINING_STAGES), (monitoring, MONITORING_STAGES)):
        assert dag.max_active_runs == 1
        for stage in stages:
            task = dag.get_task(stage)
            assert task.pool == names.POOL
            assert task.retries >= 1
            assert task.retry_exponential_backoff
            assert f"nextbuy repro-stage {stage}" in task.bash_command
        for task_id in ("set_params", "restore_params"):  # a cold API server costs a retry, not the run
            assert dag.get_task(task_id).retries == names.TASK_RETRIES
        assert dag.get_task("set_params").is_setup
        assert dag.get_task("restore_params").is_teardown
    # Unpausing starts no run: no catch-up, and no run for the tick missed while paused.
    assert not training.catchup
    assert not monitoring.catchup
    assert type(training.timetable).__name__ == "NextTickTimetable"
    assert type(monitoring.timetable.timetable).__name__ == "NextTickTimetable"
    assert [o.uri for o in training.get_task("release").outlets] == [names.CHAMPION_ASSET_URI]
    assert set(training.params) >= {
        "target_precision",
        "epochs",
        "source",
        "graph_path",
        "preset",
        "overrides",
        "reason",
    }
    assert all(
        training.params[k] is None for k in ("target_precision", "epochs", "source", "graph_path", "preset")
    )
    assert monitoring.params["preset"] is None  # the store a run watches: a preset of presets/
    assert monitoring.get_task("retrain").trigger_dag_id == TRAINING_DAG_ID


def test_dagbag_loads_the_batch_dag(airflow_project):
    dag = _dagbag(DAGS).dags[BATCH_DAG_ID]
    assert [t.task_id for t in dag.topological_sort()] == BATCH_ORDER
    assert dag.max_active_runs == 1
    assert not dag.catchup
    # Nightly, and on every champion release (the Asset the training DAG's release emits).
    assert type(dag.timetable).__name__ == "AssetOrTimeSchedule"
    assert type(dag.timetable.timetable).__name__ == "NextTickTimetable"
    assert dag.timetable.timetable._expression == "0 2 * * *"
    assert dag.timetable.asset_condition.uri == names.CHAMPION_ASSET_URI
    assert dag.params["k"] == 20
    assert dag.params["num_shards"] == 4
    # One mapped task instance per shard: the shards resolve_champion returns; each gets the
    # champion it pinned (its XCom "champion"), and publish waits for all of them.
    shard = dag.get_task("batch_shard")
    assert shard.is_mapped
    assert shard.pool != names.POOL
    mapped = shard.op_kwargs_expand_input.value["shard"]
    assert mapped.operator.task_id == "resolve_champion"
    assert mapped.key == "return_value"
    pinned = shard.partial_kwargs["op_kwargs"]["champion"]
    assert (pinned.operator.task_id, pinned.key) == ("resolve_champion", batch.CHAMPION_XCOM)
    assert dag.get_task("publish").upstream_task_ids == {"resolve_champion", "batch_shard"}
    assert all(t.retries == names.TASK_RETRIES and t.retry_exponential_backoff for t in dag.tasks)


def test_the_batch_run_is_skipped_while_there_is_no_champion(airflow_project, monkeypatch):
    from airflow.sdk.exceptions import AirflowSkipException

    def no_champion(project, k, num_shards):
        raise batch.NoChampion("no released champion of 'nextbuy'")

    monkeypatch.setattr(batch, "resolve", no_champion)
    with pytest.raises(AirflowSkipException, match="no released champion"):
        batch.resolve_champion_task(airflow_project, {"params": {"k": 20, "num_shards": 4}})


def _quick_passes():
    """``time.sleep`` for the length of a dag.test(): its loop's own wait between two passes when
    no task is runnable shortened from a second to 0.05 s, every other sleep as asked. The loop
    marks a failed task's downstream tasks upstream_failed one level per pass, so a failed first
    stage otherwise idles seven seconds."""
    import inspect

    from airflow.sdk.definitions import dag as dag_module

    loop_file = inspect.getfile(dag_module)
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        caller = sys._getframe(1).f_code.co_filename
        real_sleep(min(seconds, 0.05) if caller == loop_file else seconds)

    return sleep


def _run(
    dag, logical_date: datetime | None = None, conf: dict | None = None
) -> tuple[str, dict[str, str], str]:
    """dag.test(); returns (run state, {task_id: state}, run_id)."""
    from airflow.utils.session import create_session

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(time, "sleep", _quick_passes())
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
        row = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_id,
                XComModel.run_id == run_id,
                XComModel.task_id == task_id,
                XComModel.key == key,
            )
        ).first()
        return None if row is None else XComModel.deserialize_value(row)


def _asset_events(run_id: str) -> list[dict]:
    """Extras of the champion Asset events the run emitted."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.uri == names.CHAMPION_ASSET_URI, AssetEvent.source_run_id == run_id)
        ).all()
        return [dict(r.extra) for r in rows]


def _checkout_state(project: Path) -> dict:
    """What a user of the checkout sees: `dvc status`, its params.yaml and dvc.lock."""
    status = subprocess.run(
        ["dvc", "status", "--json"], cwd=project, capture_output=True, text=True, timeout=120
    )
    lock = project / "dvc.lock"
    return {
        "dvc_status": json.loads(status.stdout or "{}"),
        "params": (project / "params.yaml").read_text(),
        "dvc.lock": lock.read_text() if lock.exists() else None,
    }


@pytest.fixture(scope="module")
def trained(airflow_project):
    """One training run on the tiny store, form fields and free overrides set."""
    project = airflow_project
    original = (project / "params.yaml").read_text()
    checkout_before = _checkout_state(project)
    dag = _dagbag(project / "dags").dags[TRAINING_DAG_ID]
    conf = {"target_precision": 0.25, "overrides": {"train.epochs": 1}, "reason": "test run"}
    state, tasks, run_id = _run(dag, logical_date=DAY, conf=conf)
    assert _checkout_state(project) == checkout_before  # the run never touched the checkout
    return project, original, state, tasks, run_id


@pytest.mark.slow
def test_training_dag_runs_the_stages_and_releases_a_champion(trained):
    from mlflow.tracking import MlflowClient

    project, original, state, tasks, run_id = trained
    assert state == "success", tasks
    assert all(tasks[t] == "success" for t in TRAINING_ORDER), tasks
    ws = workspace_dir(project)
    assert (ws / "params.yaml").read_text() == original
    assert not (ws / BACKUP_FILE).exists()
    # The run is a DVC experiment the checkout lists (its params and metrics).
    exps = subprocess.run(["dvc", "exp", "list"], cwd=project, capture_output=True, text=True).stdout
    assert experiment_name(TRAINING_DAG_ID, run_id) in exps

    overrides = _xcom(TRAINING_DAG_ID, run_id, "set_params")["overrides"]
    assert overrides == {
        "ingest.snapshot": "2026-11-15T00:00:00",
        "thresholds.target_precision": 0.25,
        "train.epochs": 1,
    }
    # The workspace's dvc.lock is the record of what ran: the run's values, not params.yaml's.
    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    assert set(TRAINING_STAGES) <= set(lock)
    assert lock["ingest"]["params"]["params.yaml"]["ingest"]["snapshot"] == "2026-11-15T00:00:00"
    assert lock["train"]["params"]["params.yaml"]["train"]["epochs"] == 1

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    champion = client.get_model_version_by_alias(PARAMS["deploy"]["model_name"], "champion")
    assert champion.tags["passed"] == "true"
    lineage = json.loads(champion.tags["lineage"])
    assert lineage["airflow_run_id"] == run_id
    lineage = lineage["params"]
    assert lineage["thresholds"]["target_precision"] == 0.25
    assert lineage["ingest"]["snapshot"] == "2026-11-15T00:00:00"
    train_run = client.search_runs(
        [client.get_experiment_by_name("nextbuy").experiment_id], "tags.stage = 'train'"
    )[0]
    assert train_run.data.params["train.epochs"] == "1"
    assert _xcom(TRAINING_DAG_ID, run_id, "gate")["passed"] is True
    events = _asset_events(run_id)
    assert len(events) == 1
    assert str(events[0]["version"]) == str(champion.version) == "1"


def _map_states(dag_id: str, run_id: str, task_id: str) -> dict[int, tuple[str, str | None]]:
    """{map_index: (state, label in the UI)} of a mapped task's instances in one run."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.task_id == task_id
            )
        ).all()
        return {ti.map_index: (getattr(ti.state, "value", ti.state), ti.rendered_map_index) for ti in rows}


@pytest.mark.slow
def test_batch_dag_writes_top_k_for_every_product_with_the_champion(trained):
    """resolve_champion pins the champion (v1), one mapped task per shard runs batch-topk,
    publish checks the shards, writes the manifest and points _latest.json at the version.
    (A second run for the same version: the same rows, as the bundle answers them, the shards
    replaced and the manifest the same but for its run: tests/serving/test_batch.py and
    tests/orchestration/test_batch_tasks.py.)"""
    import pandas as pd

    project, *_ = trained
    dag = _dagbag(project / "dags").dags[BATCH_DAG_ID]
    conf = {"k": 5, "num_shards": 2}
    state, tasks, run_id = _run(dag, conf=conf)
    assert state == "success", tasks
    assert _map_states(BATCH_DAG_ID, run_id, "batch_shard") == {
        i: ("success", f"shard {i} of 2") for i in range(2)
    }
    assert _xcom(BATCH_DAG_ID, run_id, "resolve_champion") == [0, 1]
    pinned = _xcom(BATCH_DAG_ID, run_id, "resolve_champion", key=batch.CHAMPION_XCOM)
    model = PARAMS["deploy"]["model_name"]
    assert pinned["model_uri"] == f"models:/{model}/1"
    assert pinned["model_version"] == 1

    root = project / names.RECOMMENDATIONS_DIR
    folder = root / "model_version=1"
    assert sorted(p.name for p in folder.iterdir()) == [BATCH_MANIFEST, "shard=000", "shard=001"]
    manifest = json.loads((folder / BATCH_MANIFEST).read_text())
    n = manifest["n_products"]
    assert n == PARAMS["ingest"]["simulator"]["n_products"]
    assert {k: manifest[k] for k in ("model_version", "k", "num_shards", "rows", "run_id", "dag_id")} == {
        "model_version": 1,
        "k": 5,
        "num_shards": 2,
        "rows": n * 5,
        "run_id": run_id,
        "dag_id": BATCH_DAG_ID,
    }
    assert manifest["created_at"].endswith("+00:00")
    frame = pd.read_parquet(folder)
    assert len(frame) == n * 5
    assert set(frame["source_id"]) == set(range(n))
    assert not frame.duplicated(["source_id", "rank"]).any()
    assert (frame["source_id"] != frame["candidate_id"]).all()
    assert (frame["source_id"] % 2 == frame["shard"].astype(int)).all()  # shard i: the ids with id % 2 == i
    latest = batch.read_latest(root)
    assert latest["path"] == "model_version=1"
    assert latest["run_id"] == run_id
    assert latest["rows"] == n * 5
    assert _xcom(BATCH_DAG_ID, run_id, "publish") == manifest


@pytest.mark.slow
def test_a_stage_refusing_its_input_fails_the_run_without_retries_and_params_come_back(trained, capfd):
    project, original, *_ = trained
    dag = _dagbag(project / "dags").dags[TRAINING_DAG_ID]
    ws = workspace_dir(project)
    outputs = ["metrics/ingest.json", "plots/ingest/degree_ccdf.csv", "data/ingested/products.parquet"]
    before = {name: (ws / name).read_bytes() for name in outputs}
    ingest = dag.get_task("ingest")
    ingest.retries, ingest.retry_delay, ingest.max_retry_delay = 1, timedelta(seconds=1), timedelta(seconds=2)
    missing = project / "no-such-graph.csv"
    state, tasks, _ = _run(
        dag, logical_date=DAY + timedelta(days=1), conf={"source": "edge_list", "graph_path": str(missing)}
    )
    assert state == "failed", tasks
    # A missing input file fails every retry alike: failed at once, retries left unused.
    assert tasks["ingest"] == "failed"
    assert tasks["_tries"]["ingest"] == 1
    assert all(tasks[t] == "upstream_failed" for t in [*TRAINING_STAGES[1:], "gate", "release"]), tasks
    assert tasks["restore_params"] == "success"
    assert (ws / "params.yaml").read_text() == original
    assert not (ws / BACKUP_FILE).exists()
    # The stage's own error is in the task log; its last good outputs, metrics and plots
    # included, are back as dvc.lock records them.
    assert "no-such-graph.csv" in capfd.readouterr().out
    assert {name: (ws / name).read_bytes() for name in outputs} == before


@pytest.mark.slow
def test_monitoring_without_alerts_ends_quietly(trained):
    project, original, *_ = trained
    dag = _dagbag(project / "dags").dags[MONITORING_DAG_ID]
    state, tasks, _ = _run(dag)
    assert state == "success", tasks
    assert tasks["check_alerts"] == "success"
    assert tasks["no_retrain"] == "success"
    assert tasks["retrain"] == "skipped"
    assert json.loads((workspace_dir(project) / "monitoring" / "alerts.json").read_text())["alerts"] == []
    assert (workspace_dir(project) / "params.yaml").read_text() == original


@pytest.mark.slow
def test_monitoring_alert_triggers_retraining_with_the_reason(trained):
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    project, original, *_ = trained
    dag = _dagbag(project / "dags").dags[MONITORING_DAG_ID]
    state, tasks, run_id = _run(dag, conf={"overrides": DRIFT_DRILL})
    assert state == "success", tasks
    assert tasks["retrain"] == "success", tasks
    assert tasks["no_retrain"] == "skipped", tasks
    fired = json.loads((workspace_dir(project) / "monitoring" / "alerts.json").read_text())["alerts"]
    assert fired
    assert {a["bucket"] for a in fired} == {1}
    with create_session() as session:
        runs = DagRun.find(dag_id=TRAINING_DAG_ID, run_id=f"retrain__{run_id}", session=session)
        assert len(runs) == 1
        reason = runs[0].conf["reason"]
    assert run_id in reason
    assert fired[0]["message"] in reason
    assert (workspace_dir(project) / "params.yaml").read_text() == original


# --- the schedule policy (orchestration/plugin.py): unpausing starts no run -----------------


MIDNIGHT = datetime(2026, 11, 28, tzinfo=UTC)


def next_run(monkeypatch, now: datetime, last_tick: datetime | None) -> datetime:
    import airflow.timetables.trigger as airflow_trigger
    import pendulum
    from airflow.timetables.base import DataInterval

    from nextbuy.orchestration import plugin

    clock = lambda: pendulum.instance(now)  # noqa: E731 - the one "now" of this check
    monkeypatch.setattr(plugin.timezone, "utcnow", clock)
    monkeypatch.setattr(airflow_trigger, "utcnow", clock)  # the timetable Airflow's own code asks
    last = None if last_tick is None else DataInterval(last_tick, last_tick)
    timetable = plugin.NextTickTimetable("0 0 * * *", timezone="UTC")
    from airflow.timetables.base import TimeRestriction

    restriction = TimeRestriction(earliest=datetime(2026, 11, 1, tzinfo=UTC), latest=None, catchup=False)
    info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
    return info.run_after


@pytest.mark.parametrize("minutes_after", [0.5, 2, 4.9, 30])
def test_unpausing_a_dag_never_scheduled_starts_no_run_even_just_after_a_tick(
    airflow_project, monkeypatch, minutes_after
):
    now = MIDNIGHT + timedelta(minutes=minutes_after)
    assert next_run(monkeypatch, now, None) == MIDNIGHT + timedelta(days=1)


def test_unpausing_after_missed_ticks_waits_for_the_next_tick(airflow_project, monkeypatch):
    now = MIDNIGHT + timedelta(minutes=2)
    assert next_run(monkeypatch, now, MIDNIGHT - timedelta(days=3)) == MIDNIGHT + timedelta(days=1)


def test_a_running_schedule_keeps_a_tick_noticed_late(airflow_project, monkeypatch):
    yesterday = MIDNIGHT - timedelta(days=1)
    assert next_run(monkeypatch, MIDNIGHT + timedelta(seconds=20), yesterday) == MIDNIGHT
    # Beyond the slack the tick is gone: the next one.
    from nextbuy.orchestration.plugin import DUE_SLACK

    late = MIDNIGHT + DUE_SLACK + timedelta(seconds=1)
    assert next_run(monkeypatch, late, yesterday) == MIDNIGHT + timedelta(days=1)


def test_before_the_tick_the_next_run_is_that_tick(airflow_project, monkeypatch):
    assert next_run(monkeypatch, MIDNIGHT - timedelta(hours=1), None) == MIDNIGHT


@pytest.mark.parametrize(("exit_code", "retried"), [(INPUT_ERROR_EXIT_CODE, False), (1, True)])
def test_a_stage_that_refuses_its_configuration_or_input_fails_without_retries(
    airflow_project, tmp_path, exit_code, retried
):
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    from nextbuy.orchestration.plugin import StageOperator

    task = StageOperator(task_id="train", bash_command=f"exit {exit_code}", cwd=str(tmp_path))
    with pytest.raises(AirflowException) as err:
        task.execute({})
    assert isinstance(err.value, AirflowFailException) is not retried


TINY_TRAINING = """
import sys, time
from pathlib import Path
import torch
from nextbuy.domain.graph.blade import Architecture, Conversions, DirectedGraph, TrainingSchedule, train_blade

torch.set_num_threads(1)
src = torch.arange(30)
graph = DirectedGraph(30, src, (src + 1) % 30, features=None)
arch = Architecture(embedding_dim=8, n_layers=1, fanout_rule="power_law", fanout_min=2, fanout_max=4,
                    dropout=0.0, cold_start_fallback=False, id_embeddings=True)
schedule = TrainingSchedule(epochs=3, batch_size=8, lr=0.01, weight_decay=0.0, id_weight_decay=0.0,
                            link_loss_weight=1.0, n_negatives=1, reverse_penalty=1.0, supervision_share=0.5,
                            eval_every=1, patience=3, seed=0, warmup_steps=0, neighbour_history=False,
                            export_chunk=64)
train_blade(graph, Conversions.none(), architecture=arch, schedule=schedule, progress="member 1/1")
# Still running: wait until the task log has shown the first epoch's line (exit 3 if it never does).
seen, deadline = Path(sys.argv[1]), time.monotonic() + 60
while not seen.exists() and time.monotonic() < deadline:
    time.sleep(0.05)
sys.exit(0 if seen.exists() else 3)
"""


def test_training_progress_reaches_the_task_log_while_the_stage_still_runs(airflow_project, tmp_path):
    """The stage task's path: StageOperator -> bash -> nextbuy repro-stage -> dvc repro -> a
    training, off a terminal.
    The training does not end until the task log has shown its first epoch's line, so output
    that arrived only at the end (buffered anywhere on the way) fails it."""
    from structlog.testing import capture_logs

    from nextbuy.orchestration.plugin import StageOperator

    (tmp_path / "tiny_train.py").write_text(TINY_TRAINING)
    seen = tmp_path / "first-epoch-in-the-log"
    cmd = f"{shlex.quote(sys.executable)} tiny_train.py {shlex.quote(str(seen))}"
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": {"cmd": cmd}}}))
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    repro = f"{shlex.quote(sys.executable)} -m nextbuy.cli repro-stage train"
    task = StageOperator(task_id="train", bash_command=repro, cwd=str(tmp_path))
    lines: list[tuple[bool, str]] = []  # (the stage still running, the line)

    def log_handler(logger, method, event):
        process = task.subprocess_hook.sub_process
        lines.append((process is not None and process.poll() is None, str(event.get("event"))))
        if "epoch 1/3" in lines[-1][1]:
            seen.touch()
        return event

    with capture_logs(processors=[log_handler]):
        task.execute({})
    progress = [(running, line) for running, line in lines if line.startswith("member 1/1: epoch")]
    assert [line.split(" (")[0] for _, line in progress] == [f"member 1/1: epoch {i}/3" for i in (1, 2, 3)]
    assert all(running for running, _ in progress)
    assert "left" in progress[-1][1]  # the estimate of the time left


def test_an_invalid_override_fails_set_params_without_retries(airflow_project):
    from airflow.sdk.exceptions import AirflowFailException

    context = {"params": {"overrides": {"train.epoch": 2}}, "run_id": "manual__1", "logical_date": None}
    context["dag"] = type("Dag", (), {"dag_id": TRAINING_DAG_ID})()
    with pytest.raises(AirflowFailException, match=r"(?s)invalid run overrides.*epoch.*not retried"):
        task_bodies.set_params_task(airflow_project, context, names.TRAINING)
