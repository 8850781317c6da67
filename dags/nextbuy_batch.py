"""nextbuy_batch: top-K recommendations for every product with the champion, nightly.

resolve_champion -> batch_shard (one mapped task per shard) -> publish.

* Scheduled daily at 02:00 UTC *and* whenever nextbuy_training releases a champion (the
  Asset) while this DAG is unpaused. A paused DAG is off; unpausing starts no run.
* resolve_champion pins the champion's registered version at the start of the run: every
  shard runs ``nextbuy batch-topk --model models:/<name>/<version>``, so a release mid-run
  changes nothing in this run (it queues the next one). No champion yet: the run is skipped.
* batch_shard is mapped over ``range(num_shards)``: shard i (the products with
  id % num_shards == i) is its own task instance, so workers split the catalogue. Each
  writes ``recommendations/model_version=<V>/shard=<iii>/`` in the project checkout
  (the folder appears when complete) and is retried on failure.
* publish checks every shard (rows = products x k, every product once), writes the
  version's ``_manifest.json`` and points ``recommendations/_latest.json`` at it. Older
  versions stay. Re-running a version rewrites the same rows.

The logic lives in ``nextbuy.orchestration.batch``. This file only says what runs when.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, Param, chain, task

from nextbuy.orchestration import airflow_tasks, batch, names
from nextbuy.orchestration.plugin import NextTickTimetable

PROJECT = airflow_tasks.project_dir(__file__)
CHAMPION = Asset(name=names.CHAMPION_ASSET_NAME, uri=names.CHAMPION_ASSET_URI)

with DAG(
    dag_id=names.BATCH_DAG_ID,
    description="resolve_champion -> batch_shard x num_shards -> publish (top-K for every product)",
    schedule=AssetOrTimeSchedule(timetable=NextTickTimetable("0 2 * * *", timezone="UTC"), assets=CHAMPION),
    start_date=datetime(2026, 11, 14, tzinfo=UTC),
    catchup=False,  # the current champion's recommendations; unpausing starts no run
    max_active_runs=1,
    default_args=airflow_tasks.default_args(),
    tags=["nextbuy"],
    doc_md=__doc__,
    params={
        "k": Param(20, type="integer", minimum=1, description="recommendations per product"),
        "num_shards": Param(
            4,
            type="integer",
            minimum=1,
            maximum=batch.MAX_SHARDS,
            description="shards (one task each, run side by side by the workers)",
        ),
    },
) as dag:

    @task(task_id="resolve_champion")
    def resolve_champion(**context):
        """The shards to map over; XCom ``champion``: the champion's version now
        (models:/<name>/<version>), K, the number of products, the output folder."""
        return batch.resolve_champion_task(PROJECT, context)

    @task(task_id="batch_shard", map_index_template="shard {{ ti.map_index }} of {{ params.num_shards }}")
    def batch_shard(shard: int, champion: dict):
        """``nextbuy batch-topk --shard <shard>`` with the pinned champion."""
        return batch.shard_task(PROJECT, champion, shard)

    @task(task_id="publish")
    def publish(champion: dict, **context):
        """Every shard complete -> the version's manifest, then recommendations/_latest.json."""
        return batch.publish_task(champion, context)

    shard_ids = resolve_champion()
    champion = shard_ids[batch.CHAMPION_XCOM]  # the same task's XCom "champion"
    shards = batch_shard.partial(champion=champion).expand(shard=shard_ids)
    chain(shards, publish(champion))
