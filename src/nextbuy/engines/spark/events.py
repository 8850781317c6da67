"""A store's raw logs (``ingest.source: events``) built into the graph and the labels on Spark:
the two rules of ``nextbuy.domain.events`` that go over every row, each customer's co-purchase
pairs (rule 2) and the attribution of each impression to the customer's later clicks, carts and
orders (rule 3), for ingest and for traffic's part of the logs after the snapshot.

Both rules are per customer, so each customer's rows go to one of B buckets (``customer % B``,
B at least ``spark.sql.shuffle.partitions`` and enough that a bucket holds about
``engine.spark.batch_rows`` rows), and each bucket is computed by the pandas engine's own
function (``events.co_purchase_edges``; ``events.attribute``, a bucket's impressions cogrouped
with its orders and interactions) in one pandas call on an executor. A bucket's rows keep the
log's order (a ``row`` column), so order lines of one moment are counted back in the same order
as by the pandas engine. The buckets' edges are then summed per (src, dst) in Spark (weight:
the pairs; time: the first), and the labelled impressions come back in the log's order.

The coded logs come from the reader on Spark (``logs``) as DataFrames over parquet
(:func:`build_on_spark`: the snapshot's cut and the counts as Spark jobs), or, from the pandas
reader (CSV logs, refusals), as frames staged as parquet beside the stage's outputs
(``table.staged``); the results come back as parquet parts (``table.collected``)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nextbuy.config import EventsConfig, SparkConfig
from nextbuy.domain import events
from nextbuy.engines.spark import table
from nextbuy.engines.spark.session import session

EDGE_SCHEMA = "src long, dst long, weight double, time long"
LABEL_SCHEMA = (
    "row long, impression_id long, source_id long, shown_id long, "
    "shown_at long, clicked_at long, carted_at long, converted_at long"
)
LABEL_COLUMNS = [part.split()[0] for part in LABEL_SCHEMA.split(", ")]
ORDER = "order"  # the kind of an order line among the events a bucket's impressions are matched to


def builders(spark_cfg: SparkConfig, near: Path) -> events.Builders:
    """``events.build_from_logs``'s rules 2 and 3 on Spark (``near``: where the staged inputs
    and the results' parts go, on storage the executors share)."""
    where = (spark_cfg, Path(near))
    return events.Builders(edges=partial(co_purchase_edges, where), attribute=partial(attribute, where))


def n_buckets(spark: Any, rows: int, batch_rows: int) -> int:
    """Buckets of customers: at least one per shuffle partition, about ``batch_rows`` rows each."""
    return max(int(spark.conf.get("spark.sql.shuffle.partitions", "1")), -(-rows // batch_rows), 1)


def co_purchase_edges(
    where: tuple[SparkConfig, Path],
    customer: np.ndarray,
    product: np.ndarray,
    ordered_ns: np.ndarray,
    window_ns: int,
    lookback: int,
) -> tuple[pd.DataFrame, int]:
    """``events.co_purchase_edges`` on Spark: the same edges (sorted by src, dst) and pairs."""
    spark_cfg, near = where
    spark = session(spark_cfg)
    orders = pd.DataFrame(
        {"row": np.arange(len(customer)), "customer": customer, "product": product, "at": ordered_ns}
    )
    with table.staged(spark, {"orders": orders}, near, spark_cfg.batch_rows) as staged:
        return edges_on_spark(where, staged["orders"], len(orders), window_ns, lookback)


def edges_on_spark(
    where: tuple[SparkConfig, Path], orders: Any, rows: int, window_ns: int, lookback: int
) -> tuple[pd.DataFrame, int]:
    """Rule 2 of a Spark DataFrame of order lines (``row``: the log's order, customer, product,
    ``at`` in int64 ns; ``rows`` of them): the edges (sorted by src, dst) and the pairs."""
    from pyspark.sql import functions as F

    spark_cfg, near = where
    buckets = n_buckets(orders.sparkSession, rows, spark_cfg.batch_rows)

    def per_bucket(rows: pd.DataFrame) -> pd.DataFrame:
        rows = rows.sort_values("row", kind="stable")  # the log's order among order lines of one moment
        edges, _ = events.co_purchase_edges(
            rows["customer"].to_numpy(np.int64),
            rows["product"].to_numpy(np.int64),
            rows["at"].to_numpy(np.int64),
            window_ns,
            lookback,
        )
        return table.for_spark(edges)

    pairs = (
        orders.select("row", "customer", "product", "at")
        .withColumn("bucket", F.col("customer") % buckets)
        .groupBy("bucket")
        .applyInPandas(per_bucket, EDGE_SCHEMA)
    )
    merged = pairs.groupBy("src", "dst").agg(F.sum("weight").alias("weight"), F.min("time").alias("time"))
    edges = table.collected(merged, near).sort_values(["src", "dst"], ignore_index=True)
    out = pd.DataFrame(
        {
            "src": edges["src"].to_numpy(np.int64),
            "dst": edges["dst"].to_numpy(np.int64),
            "weight": edges["weight"].to_numpy(np.float64),
            "time": edges["time"].to_numpy(np.int64).view("datetime64[ns]"),
        }
    )
    return out, int(out["weight"].sum())


def _events(orders: pd.DataFrame, interactions: pd.DataFrame) -> pd.DataFrame:
    """Orders and interactions as one table of events: customer, product, kind, at (int64 ns)."""
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "customer": orders["customer"].to_numpy(np.int64),
                    "product": orders["product"].to_numpy(np.int64),
                    "kind": ORDER,
                    "at": orders["ordered_at"].to_numpy("datetime64[ns]").view(np.int64),
                }
            ),
            pd.DataFrame(
                {
                    "customer": interactions["customer"].to_numpy(np.int64),
                    "product": interactions["product"].to_numpy(np.int64),
                    "kind": interactions["kind"].astype(str).to_numpy(),
                    "at": interactions["at"].to_numpy("datetime64[ns]").view(np.int64),
                }
            ),
        ],
        ignore_index=True,
    )


def _attribute_bucket(imp: pd.DataFrame, ev: pd.DataFrame, n_products: int, window_ns: int) -> pd.DataFrame:
    """One bucket's impressions attributed to its events by ``events.attribute``."""
    times = {"shown_at": imp["shown_at"].to_numpy(np.int64).view("datetime64[ns]")}
    order = ev["kind"].to_numpy() == ORDER
    at = ev["at"].to_numpy(np.int64).view("datetime64[ns]")
    orders = pd.DataFrame({"customer": ev["customer"], "product": ev["product"], "ordered_at": at})[order]
    interactions = ev.assign(at=at)[~order]
    out = events.attribute(imp.assign(**times), orders, interactions, n_products, window_ns)
    return table.for_spark(out).assign(row=imp["row"].to_numpy(np.int64))


def attribute(
    where: tuple[SparkConfig, Path],
    impressions: pd.DataFrame,
    orders: pd.DataFrame,
    interactions: pd.DataFrame,
    n_products: int,
    window_ns: int,
) -> pd.DataFrame:
    """``events.attribute`` on Spark: the same labelled impressions, in the input's order."""
    spark_cfg, near = where
    spark = session(spark_cfg)
    imp = pd.DataFrame(
        {
            "row": np.arange(len(impressions)),
            **{
                c: impressions[c].to_numpy(np.int64)
                for c in ("impression_id", "customer", "source_id", "shown_id")
            },
            "shown_at": impressions["shown_at"].to_numpy("datetime64[ns]").view(np.int64),
        }
    )
    ev = _events(orders, interactions)
    with table.staged(spark, {"impressions": imp, "events": ev}, near, spark_cfg.batch_rows) as staged:
        return labels_on_spark(where, staged["impressions"], staged["events"], n_products, window_ns)


def labels_on_spark(
    where: tuple[SparkConfig, Path], impressions: Any, ev: Any, n_products: int, window_ns: int
) -> pd.DataFrame:
    """Rule 3 of Spark DataFrames: ``impressions`` (``row``: the log's order, impression_id,
    customer, source_id, shown_id, shown_at in int64 ns) attributed to ``ev`` (orders and
    interactions: customer, product, kind, at): the labelled impressions in the rows' order."""
    labelled = labelled_frame(where[0], impressions, ev, n_products, window_ns)
    rows = table.collected(labelled, where[1]).sort_values("row", ignore_index=True)
    return pd.DataFrame(
        {
            c: rows[c].to_numpy(np.int64).view("datetime64[ns]")
            if c in table.TIME_COLUMNS
            else rows[c].to_numpy(np.int64)
            for c in events.LOG_COLUMNS
        }
    )


def labelled_frame(spark_cfg: SparkConfig, impressions: Any, ev: Any, n_products: int, window_ns: int) -> Any:
    """Rule 3 as a Spark DataFrame (``LABEL_SCHEMA``: times int64 ns, no label ``table.NAT``),
    not yet computed."""
    from pyspark.sql import functions as F

    def per_bucket(imp_rows: pd.DataFrame, ev_rows: pd.DataFrame) -> pd.DataFrame:
        if imp_rows.empty:  # customers with events but no impression
            return pd.DataFrame({c: pd.Series([], dtype=np.int64) for c in LABEL_COLUMNS})
        return _attribute_bucket(imp_rows, ev_rows, n_products, window_ns)[LABEL_COLUMNS]

    # the buckets' count needs the rows: two counts of the (staged) inputs, not the data
    buckets = n_buckets(impressions.sparkSession, impressions.count() + ev.count(), spark_cfg.batch_rows)
    keyed = [
        frame.withColumn("bucket", F.col("customer") % buckets)
        for frame in (
            impressions.select("row", "impression_id", "customer", "source_id", "shown_id", "shown_at"),
            ev.select("customer", "product", "kind", "at"),
        )
    ]
    return (
        keyed[0].groupBy("bucket").cogroup(keyed[1].groupBy("bucket")).applyInPandas(per_bucket, LABEL_SCHEMA)
    )


def build_on_spark(
    logs: Any, n_products: int, cfg: EventsConfig, snapshot: pd.Timestamp, where: tuple[SparkConfig, Path]
) -> tuple[pd.DataFrame, Any, dict[str, int]]:
    """``events.build_from_logs`` of the coded logs of ``logs.read_on_spark`` (Spark
    DataFrames over parquet), without bringing them to this process: the same edges and counts,
    and the labelled impressions as a Spark DataFrame (:func:`labelled_frame`, ``row``: the
    log's order), computed once here (the counts) into parquet beside ``where``'s folder."""
    from pyspark.sql import functions as F

    end = pd.Timestamp(snapshot).value
    orders = logs.orders.where(F.col("at") <= end)
    interactions = logs.interactions.where(F.col("at") <= end)
    later = int(logs.impressions.where(F.col("shown_at") > end).count())
    impressions = logs.impressions.where(F.col("shown_at") <= end)
    n_orders = int(orders.count())
    edges, pairs = edges_on_spark(
        where, orders, n_orders, round(cfg.graph_window_days * events.NS_PER_DAY), cfg.graph_lookback_orders
    )
    ev = orders.select("customer", "product", F.lit(ORDER).alias("kind"), "at").unionByName(
        interactions.select("customer", "product", "kind", "at")
    )
    window = round(cfg.attribution_days * events.NS_PER_DAY)
    labelled = labelled_frame(where[0], impressions, ev, n_products, window)
    labelled.write.mode("overwrite").parquet(str(where[1] / "labelled"))
    labelled = labelled.sparkSession.read.parquet(str(where[1] / "labelled"))
    counts = {
        "orders": n_orders,
        "co_purchase_pairs": pairs,
        "edges_kept": len(edges),
        "impressions_after_snapshot_dropped": later,
        "conversions_attributed": int(labelled.where(F.col("converted_at") != table.NAT).count()),
    }
    return edges, labelled, counts
