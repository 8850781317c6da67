"""label_delay on Spark: every impression's target and weight on the executors.

The driver reads the catalogue and the graph (a row per product and per edge, never per
impression), takes each product's first impression from an aggregate over the log, and builds
the delay models' pair-feature context once. It fits the delay models on the train split's fit
sample (``delay.fit_sample``: the same rows the pandas engine fits on), then every Arrow
batch of the log is weighted on the executors by ``delay.weighted_rows`` with that context
and those models. The rows are written once as Spark parts; the aggregates (the ``importance_ipw``
mean, the metrics and plot tables: ``label_metrics``) are read from them, and the driver
streams them into ``data/weighted/impressions.parquet``, rescaling ``importance_ipw`` on the
way, row group by row group."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from nextbuy import paths
from nextbuy.config import LabelDelayConfig, SparkConfig
from nextbuy.domain import delay
from nextbuy.domain.delay import PairContext, exposure_from_first
from nextbuy.engines.spark import label_metrics, table
from nextbuy.engines.spark.session import session
from nextbuy.mlops import io, schemas

# Per-row values the metrics need beside the written columns (dropped before the file).
AUX = ("expected", "p_convert", "median_delay", "engagement", "elapsed_bin")


def pair_context(
    spark_frame: Any, products: pd.DataFrame, edges: pd.DataFrame, at: pd.Timestamp
) -> PairContext:
    """The pair-feature context of the whole log at ``at``, as the pandas engine builds it."""
    exposure = exposure_from_first(table.first_seen_ns(spark_frame, len(products)), at)
    return PairContext.build(products, edges, exposure)


def fitted_models(
    spark_frame: Any,
    context: PairContext,
    snapshot: pd.Timestamp,
    cfg: LabelDelayConfig,
    horizon_days: float | None = None,
) -> dict[str, delay.DelayModel]:
    """The delay models, fitted on the driver on the train split's fit sample (truncated at the
    labels' attribution window ``horizon_days``, when there is one)."""
    from pyspark.sql import functions as F

    n_train = spark_frame.where(F.col("split") == "train").count()
    rate, seed = delay.sample_rate(n_train, cfg.fit_sample_rows), cfg.seed

    def sample(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            keep = delay.fit_sample(batch["impression_id"].to_numpy(), batch["split"].eq("train"), rate, seed)
            yield batch[keep]

    rows = table.as_pandas(spark_frame.mapInPandas(sample, spark_frame.schema).toPandas())
    signals = delay.impression_signals(rows, snapshot, context=context)
    problem = delay.fit_problem(signals, cfg.wait_days)
    if problem is not None:
        raise io.DataError(paths.IMPRESSIONS, *problem)
    return delay.fit_models(signals, signals.columns, cfg.delay_family, horizon_days)


def weigh_batch(
    batch: pd.DataFrame,
    shared: tuple[PairContext, dict[str, delay.DelayModel], pd.Timestamp, LabelDelayConfig],
) -> pd.DataFrame:
    """One batch's weighted rows (``importance_ipw`` not yet rescaled) and the ``AUX`` columns."""
    context, models, snapshot, cfg = shared
    signals = delay.impression_signals(batch, snapshot, context=context)
    rows = delay.weighted_rows(batch, signals, models, cfg.wait_days, cfg.max_weight)
    model = models["importance"]
    negative = signals["label"].to_numpy() == 0
    return rows.assign(
        expected=delay.expected_eventual_label(rows["label"].to_numpy(), rows["p_flip"].to_numpy()),
        p_convert=model.p_convert(signals),
        median_delay=model.median_delay(signals),
        engagement=delay.engagement_level(signals).astype(str),
        elapsed_bin=np.where(
            negative,
            pd.cut(signals["elapsed_days"].to_numpy(), delay.ELAPSED_BINS, right=False).astype(str),
            "",
        ),
    )


def run(cfg: LabelDelayConfig, spark_cfg: SparkConfig) -> tuple[dict, dict, pd.DataFrame, pd.DataFrame]:
    """The stage on Spark: writes data/weighted; returns the importance model (as a dict), the
    metrics and the two plot tables, which the stage writes as the pandas engine's."""
    spark = session(spark_cfg)
    products = io.read_table(paths.PRODUCTS, schemas.PRODUCTS)
    edges = io.read_table(paths.EDGES, schemas.EDGES)
    meta = io.read_json(paths.INGEST_META)
    snapshot = pd.Timestamp(meta["snapshot"])
    log = table.read(spark, paths.IMPRESSIONS)
    context = pair_context(log, products, edges, snapshot)
    models = fitted_models(log, context, snapshot, cfg, meta.get("attribution_days"))
    get = table.shared(spark, (context, models, snapshot, cfg))
    example = weigh_batch(table.as_pandas(log.limit(4).toPandas()), get())
    struct = table.struct_of(example)

    def weigh(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        shared = get()
        for batch in batches:
            yield table.for_spark(weigh_batch(table.as_pandas(batch), shared))

    with table.spilled(log.mapInPandas(weigh, struct), paths.WEIGHTED_IMPRESSIONS.parent) as (
        files,
        rows,
    ):
        scale = label_metrics.ipw_scale(rows, cfg)
        metrics, profile, flips = label_metrics.metrics(rows, scale, models, cfg)
        written = example.drop(columns=list(AUX))

        def finish(group: pd.DataFrame) -> pd.DataFrame:
            return group.assign(weight_importance_ipw=group["weight_importance_ipw"] / scale)

        # batch_rows bounds the stage's process: Spark's row groups grow with the log.
        table.merge_parts(
            files, paths.WEIGHTED_IMPRESSIONS, schemas.WEIGHTED, written, finish, spark_cfg.batch_rows
        )
    return models["importance"].to_dict(), metrics, profile, flips
