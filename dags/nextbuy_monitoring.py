"""nextbuy_monitoring: new traffic, the monitor, and retraining when it alerts.

set_params (setup) -> the monitoring stages (dvc.yaml, ``meta.dag: monitoring``:
traffic, monitor) -> check_alerts -> retrain | no_retrain, then restore_params (teardown).

* Scheduled daily at 06:00 UTC (after the midnight training run) *and* whenever
  nextbuy_training releases a champion (the Asset) while this DAG is unpaused: a new
  model is checked against traffic at once instead of up to a day later. A paused DAG
  is off: releases made meanwhile are not queued, and unpausing starts no run (trigger
  it to check the current champion now). A release-triggered run
  never retrains itself (that could loop retrain -> release -> monitor); its
  alerts are logged for on-call and the next daily check decides.
* check_alerts runs ``nextbuy alerts`` (exit 3 = alerts); with alerts it triggers
  nextbuy_training with conf {"reason": <the alert messages>}. No champion released yet
  (the gate refused every candidate): monitor succeeds monitoring nothing, with no alerts
  and its reason, so check_alerts logs why and goes to no_retrain.
* set_params pins ``ingest`` to what dvc.lock recorded for the last ingest (the
  data the model was trained on) plus the form's overrides (e.g. a drift drill:
  {"traffic.drift.kind": "bucket_shift", "traffic.drift.odds_multiplier": 0.2}).

The logic lives in ``nextbuy.orchestration``; the stages and their order come from
dvc.yaml (``meta.dag``). This file only says what runs when.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, Param, chain, task

from nextbuy.orchestration import airflow_tasks, names, task_bodies
from nextbuy.orchestration.plugin import NextTickTimetable

PROJECT = airflow_tasks.project_dir(__file__)
CHAMPION = Asset(name=names.CHAMPION_ASSET_NAME, uri=names.CHAMPION_ASSET_URI)

with DAG(
    dag_id=names.MONITORING_DAG_ID,
    description=airflow_tasks.stage_chain(PROJECT, names.MONITORING)
    + " -> alerts? retrain (triggers training)",
    schedule=AssetOrTimeSchedule(timetable=NextTickTimetable("0 6 * * *", timezone="UTC"), assets=CHAMPION),
    start_date=datetime(2026, 11, 14, tzinfo=UTC),
    catchup=False,  # monitoring watches now; unpausing starts no run for a missed tick
    max_active_runs=1,
    default_args=airflow_tasks.default_args(),
    tags=["nextbuy"],
    doc_md=__doc__,
    params={
        "preset": Param(
            None,
            type=["null", "string"],
            description="a params preset of the project applied first, e.g. presets/online-retail.yaml",
        ),
        "overrides": Param(
            {},
            type="object",
            description="params.yaml keys for this run, dotted, e.g. a drift "
            'drill: {"traffic.drift.kind": "bucket_shift", "traffic.drift.odds_multiplier": 0.2}',
        ),
    },
) as dag:

    @task.sensor(task_id="set_params", poke_interval=30, timeout=6 * 3600, mode="reschedule")
    def set_params(**context):
        """Take the workspace; params.yaml := params.yaml + ingest as last ingested + form overrides."""
        return task_bodies.set_params_task(PROJECT, context, names.MONITORING)

    stages = airflow_tasks.stage_tasks(PROJECT, names.MONITORING)

    @task.branch(task_id="check_alerts")
    def check_alerts(**context):
        """``nextbuy alerts``: exit 3 -> retrain (conf = why), else no_retrain."""
        return task_bodies.branch_on_alerts_task(PROJECT, context)

    retrain = TriggerDagRunOperator(
        task_id=names.RETRAIN_TASK,
        trigger_dag_id=names.TRAINING_DAG_ID,
        trigger_run_id="retrain__{{ run_id }}",  # one retrain per monitoring run, even if cleared
        skip_when_already_exists=True,
        conf="{{ ti.xcom_pull(task_ids='check_alerts', key='retrain_conf') | tojson }}",
    )
    no_retrain = EmptyOperator(task_id=names.NO_RETRAIN_TASK)

    @task(task_id="restore_params")
    def restore_params(**context):
        """Put params.yaml back (after a failed stage also the outputs dvc.lock records)."""
        return task_bodies.restore_params_task(PROJECT, context, names.MONITORING)

    setup = set_params()
    teardown = restore_params()
    chain(setup, *stages, check_alerts(), [retrain, no_retrain], teardown)
    teardown.as_teardown(setups=setup)
