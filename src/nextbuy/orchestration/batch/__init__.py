"""The nightly batch of recommendations (DAG ``nextbuy_batch``): top-K for every product
with the champion, split in shards that Airflow workers run side by side.

* ``resolve``: the champion's registered version at the start of the run, pinned as
  ``models:/<name>/<version>`` so every shard scores with the same model even if a
  release happens mid-run; the model is loaded once (its recorded digests checked) for
  its number of products.
* ``run_shard``: ``nextbuy batch-topk --shard i --num-shards n`` in the project checkout
  (its environment on PATH, its MLflow store); batch-topk writes
  ``recommendations/model_version=<V>/shard=<iii>/part-NNNNN.parquet``, each shard folder
  appearing only when complete.
* ``publish``: every shard folder there with one row per (source, rank 1..k) for exactly
  its sources (``id % n == i``), so rows = n_products x k and every source once; then the
  version's ``_manifest.json`` and the pointer ``recommendations/_latest.json``, each
  replaced atomically. Older versions stay where they are.

A re-run for the same version rewrites the same shards (the same model gives the same
rows) and the manifest, and points ``_latest.json`` at it again.

Standard library only at import time (DAG files import this when Airflow parses them):
MLflow, numpy, pyarrow and Airflow are imported inside the functions that need them.
"""

from nextbuy.orchestration.batch.layout import (
    SHARD_DIR,
    BatchError,
    NoChampion,
    batch_env,
    model_uri,
    recommendations_dir,
    shard_dir,
    tracking_uri,
    version_dir,
)
from nextbuy.orchestration.batch.publish import (
    check_shards,
    manifest,
    point_latest,
    publish,
    read_latest,
    stale_entries,
    write_manifest,
)
from nextbuy.orchestration.batch.tasks import (
    CHAMPION_XCOM,
    LOG_TAIL_LINES,
    MAX_SHARDS,
    champion_version,
    k_per_source,
    log,
    model_n_products,
    model_name,
    publish_task,
    resolve,
    resolve_champion_task,
    run_shard,
    shard_command,
    shard_list,
    shard_task,
)

__all__ = [
    "CHAMPION_XCOM",
    "LOG_TAIL_LINES",
    "MAX_SHARDS",
    "SHARD_DIR",
    "BatchError",
    "NoChampion",
    "batch_env",
    "champion_version",
    "check_shards",
    "k_per_source",
    "log",
    "manifest",
    "model_n_products",
    "model_name",
    "model_uri",
    "point_latest",
    "publish",
    "publish_task",
    "read_latest",
    "recommendations_dir",
    "resolve",
    "resolve_champion_task",
    "run_shard",
    "shard_command",
    "shard_dir",
    "shard_list",
    "shard_task",
    "stale_entries",
    "tracking_uri",
    "version_dir",
    "write_manifest",
]
