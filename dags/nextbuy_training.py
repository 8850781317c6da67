"""nextbuy_training: the DVC training stages (dvc.yaml, ``meta.dag: training``), once a day.

set_params (setup) -> the stages (ingest ... deploy) -> gate -> release, then
restore_params (teardown, runs whatever happened).

* The logical date is the data snapshot (``ingest.snapshot``): a backfill rebuilds
  each day's model from that day's data; re-running a day finds nothing to do.
* The trigger form overrides params for this run only; params.yaml is restored
  at the end. The overrides are logged and pushed as XCom by set_params.
* Each stage is ``dvc repro --single-item <stage>``: dvc.lock records what ran.
* The deploy gate's refusal is a *skipped* gate (reasons in its log), not a failure.

The logic lives in ``nextbuy.orchestration``; the stages and their order come from
dvc.yaml (``meta.dag``). This file only says what runs when.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import DAG, Asset, Param, chain, task

from nextbuy.orchestration import airflow_tasks, names, task_bodies
from nextbuy.orchestration.plugin import NextTickTimetable

PROJECT = airflow_tasks.project_dir(__file__)
CHAMPION = Asset(name=names.CHAMPION_ASSET_NAME, uri=names.CHAMPION_ASSET_URI)


def _optional(kind: str, description: str, **schema) -> Param:
    return Param(None, type=["null", kind], description=description, **schema)


with DAG(
    dag_id=names.TRAINING_DAG_ID,
    description=airflow_tasks.stage_chain(PROJECT, names.TRAINING) + " (dvc repro per stage)",
    # Daily at 00:00 UTC. Unpausing starts no run (no catch-up, no missed tick); a manual
    # trigger runs now; past days only via `airflow backfill create` (docs/how-to/airflow.md).
    schedule=NextTickTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 14, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=airflow_tasks.default_args(),
    tags=["nextbuy"],
    doc_md=__doc__,
    params={
        "target_precision": _optional(
            "number",
            "thresholds.target_precision: precision each bucket's threshold must reach (empty: params.yaml)",
            exclusiveMinimum=0,
            exclusiveMaximum=1,
        ),
        "epochs": _optional("integer", "train.epochs (empty: params.yaml)", minimum=1),
        "source": Param(
            None,
            type=["null", "string"],
            enum=[None, "simulated", "edge_list", "npz"],
            values_display={
                None: "as in params.yaml",
                "simulated": "simulated store",
                "edge_list": "edge list (graph_path)",
                "npz": "npz graph (graph_path)",
            },
            description="ingest.source",
        ),
        "graph_path": _optional("string", "ingest.graph_path: the real graph for edge_list / npz"),
        "preset": _optional(
            "string", "a params preset of the project applied first, e.g. presets/online-retail.yaml"
        ),
        "overrides": Param(
            {},
            type="object",
            description="any params.yaml keys, dotted: "
            '{"train.lr": 0.005, "deploy.min_recall": 0.1}; these win over the fields above',
        ),
        "reason": _optional("string", "why this run (the monitoring DAG writes its alerts here)"),
    },
) as dag:

    @task.sensor(task_id="set_params", poke_interval=30, timeout=6 * 3600, mode="reschedule")
    def set_params(**context):
        """Take the workspace; params.yaml := params.yaml + snapshot + form overrides (backup kept)."""
        return task_bodies.set_params_task(PROJECT, context, names.TRAINING)

    stages = airflow_tasks.stage_tasks(PROJECT, names.TRAINING)

    @task(task_id="gate")
    def gate():
        """metrics/deploy.json: passed -> the verdict; refused -> skipped with the reasons.

        Skip, not fail: a refusal is the gate working (champion unchanged, nothing to
        retry or page about); the run stays green, the gate shows as skipped with the
        reasons in its log, and release does not run, so no Asset event is emitted.
        AirflowSkipException is never retried."""
        return task_bodies.gate_task(PROJECT)

    @task(task_id="release", outlets=[CHAMPION])
    def release(verdict: dict, **context):
        """Emit the champion Asset event (schedules nextbuy_monitoring)."""
        context["outlet_events"][CHAMPION].extra = task_bodies.release_extra(verdict, context)
        return verdict

    @task(task_id="restore_params")
    def restore_params(**context):
        """Put params.yaml back (after a failed stage also the outputs dvc.lock records)."""
        return task_bodies.restore_params_task(PROJECT, context, names.TRAINING)

    setup = set_params()
    verdict = gate()
    teardown = restore_params()
    chain(setup, *stages, verdict, release(verdict), teardown)
    teardown.as_teardown(setups=setup)  # trigger rule: all done (once set_params succeeded)
