"""monitor on Spark: the traffic scored by the champion on the executors (the serving bundle
shared once per executor process), the per-window x per-bucket sums aggregated by Spark, and
only that table, plus a bounded sample of rows per window for the Evidently dashboard, brought
to the driver. ``positivity.judged`` then makes the same table and alerts as the pandas engine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from nextbuy import paths
from nextbuy.config import MonitorConfig, SparkConfig
from nextbuy.domain import delay, positivity, traffic_rows
from nextbuy.domain.delay import PairContext, exposure_from_first, hash_unit
from nextbuy.engines.spark import table
from nextbuy.engines.spark.session import session
from nextbuy.mlops import io

# The dashboard's sample of a window: rows whose hashed id falls below its share.
SAMPLE_SEED = 0


def scored(spark: Any, log: Any, bundle: Any, products: pd.DataFrame, edges: pd.DataFrame, how: tuple) -> Any:
    """The traffic ``log`` (a Spark DataFrame of impressions) scored row by row
    (``traffic_rows.score_rows``), with each row's window and a uniform number ``u`` (its
    hashed impression id) the dashboard's sample is drawn by. ``how``: (delay model, now,
    start, window days)."""
    delay_model, now, start, window_days = how
    exposure = exposure_from_first(table.first_seen_ns(log, len(products)), now)
    context = PairContext.build(products, edges, exposure)
    get = table.shared(spark, (bundle, products, context, delay_model))

    def score(batch: pd.DataFrame) -> pd.DataFrame:
        bundle_, products_, context_, model_ = get()
        rows = traffic_rows.score_rows(bundle_, batch, products_, context_, model_, now)
        return rows.assign(
            window=positivity.window_index(rows["shown_at"], start, window_days),
            u=hash_unit(batch["impression_id"].to_numpy(), SAMPLE_SEED),
        )

    example = score(table.as_pandas(log.limit(4).toPandas()))

    def batches(parts: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in parts:
            yield table.for_spark(score(table.as_pandas(batch)))

    return log.mapInPandas(batches, table.struct_of(example)), example


def window_sums(rows: Any, maturity_days: float) -> pd.DataFrame:
    """``positivity.window_sums`` in Spark: the same columns, sorted by window and bucket."""
    from pyspark.sql import functions as F

    matured = F.col("elapsed_days") >= maturity_days
    sums = (
        rows.groupBy("window", "bucket")
        .agg(
            F.count("prob_calibrated").alias("volume"),
            F.avg("prob_calibrated").alias("predicted"),
            F.avg(F.when(matured, F.col("label_observed"))).alias("observed"),
            F.sum(matured.cast("long")).alias("matured_volume"),
            F.avg("label_observed").alias("naive"),
            F.sum("label_observed").alias("seen"),
            F.sum("expected_seen").alias("expected_seen"),
            F.avg("expected_eventual").alias("expected_eventual"),
            F.min("elapsed_days").alias("min_elapsed_days"),
        )
        .toPandas()
    )
    sums["observed"] = sums["observed"].astype(np.float64)  # null (no matured row): NaN
    return sums.sort_values(["window", "bucket"]).reset_index(drop=True)


def window_sample(rows: Any, example: pd.DataFrame, volume: pd.Series, per_window: int) -> pd.DataFrame:
    """At most about ``per_window`` scored rows of each window (all of a smaller one), by hashed id."""
    from pyspark.sql import functions as F

    share = (per_window / volume.clip(lower=1)).clip(upper=1.0)
    spark = rows.sparkSession
    shares = spark.createDataFrame(
        pd.DataFrame({"window": share.index.to_numpy(np.int64), "share": share.to_numpy(np.float64)})
    )
    picked = rows.join(F.broadcast(shares), "window").where(F.col("u") < F.col("share"))
    frame = table.as_pandas(picked.select(*example.columns).toPandas(), example)
    return frame.sort_values("shown_at", kind="stable").reset_index(drop=True)


def watch(
    spark_cfg: SparkConfig,
    bundle: Any,
    tables: tuple[pd.DataFrame, pd.DataFrame],
    delay_model: delay.DelayModel,
    span: tuple[pd.Timestamp, pd.Timestamp],
    cfg: MonitorConfig,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The traffic of ``paths.TRAFFIC_IMPRESSIONS`` scored and aggregated on Spark: the sums of
    ``positivity.window_sums`` and the dashboard's sample of scored rows. ``tables``: products
    and edges; ``span``: the traffic's start and now."""
    spark = session(spark_cfg)
    (products, edges), (start, now) = tables, span
    log = table.read(spark, paths.TRAFFIC_IMPRESSIONS)
    frame, example = scored(spark, log, bundle, products, edges, (delay_model, now, start, cfg.window_days))
    with table.spilled(frame, paths.MONITOR_WINDOWS.parent) as (_, rows):
        sums = window_sums(rows, cfg.maturity_days)
        volume = sums.groupby("window")["volume"].sum()
        sample = window_sample(rows, example, volume, spark_cfg.dashboard_rows)
    return sums, sample.drop(columns=["window", "u"])


def reference_sample(
    spark_cfg: SparkConfig,
    bundle: Any,
    tables: tuple[pd.DataFrame, pd.DataFrame],
    delay_model: delay.DelayModel,
) -> pd.DataFrame:
    """monitor's reference rows (the champion on the training-time holdout, as of the snapshot),
    at most ``dashboard_rows`` of them (by hashed id), scored on the driver with the pair
    features' context of the whole holdout."""
    from pyspark.sql import functions as F

    spark = session(spark_cfg)
    products, edges = tables
    snapshot = pd.Timestamp(io.read_json(paths.INGEST_META)["snapshot"])
    holdout = table.read(spark, paths.WEIGHTED_IMPRESSIONS).where(F.col("split") != "train")
    exposure = exposure_from_first(table.first_seen_ns(holdout, len(products)), snapshot)
    context = PairContext.build(products, edges, exposure)
    share = min(1.0, spark_cfg.dashboard_rows / max(holdout.count(), 1))

    def sample(parts: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in parts:
            yield batch[hash_unit(batch["impression_id"].to_numpy(), SAMPLE_SEED) < share]

    rows = table.as_pandas(holdout.mapInPandas(sample, holdout.schema).toPandas())
    as_log = rows.assign(
        clicked_at=rows["shown_at"].where(rows["clicked"] == 1),
        carted_at=rows["shown_at"].where(rows["carted"] == 1),
        converted_at=rows["shown_at"].where(rows["label"] == 1),
    )
    label = rows["label"].to_numpy()
    return traffic_rows.score_rows(bundle, as_log, products, context, delay_model, snapshot, label=label)
