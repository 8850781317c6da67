"""What the raw logs' reader on Spark (``logs``) checks and codes over a whole log, once its
row groups are checked one by one: exact duplicate rows across row groups, the counts of
``metrics/ingest.json``'s cleaning, the checks that need every row (orders left after returns,
impression ids shared, times cut off from the rest of the log, products the catalogue does not
list), and the integer ids of products and customers. A check that fails answers False (or
None): the pandas reader then reads the logs and words the refusal."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nextbuy.engines.spark.table import written

log = logging.getLogger(__name__)

LOG_ORDER = {"orders": 0, "impressions": 1, "interactions": 2}
NO_INTERACTIONS = "row long, customer long, product long, kind string, at long"


def first_copies(rows: Any, folder: Path, name: str) -> Any:
    """A log's rows without the later copies of exact duplicate rows (the lowest row stays, as
    the pandas reader keeps the first), written once under ``folder``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    first = F.min("row").over(Window.partitionBy("h1", "h2"))
    kept = rows.withColumn("first", first).where(F.col("row") == F.col("first")).drop("first", "bad")
    return written(kept, folder, f"{name}-kept")


def cleaning_counts(kept: dict[str, Any], layouts: dict[str, Any], files: dict[str, str]) -> dict[str, int]:
    """Rows read, duplicate rows dropped and (orders with a quantity) returns dropped, per log,
    in the pandas reader's order, with its warnings."""
    from pyspark.sql import functions as F

    cleaning: dict[str, int] = {}
    for name in LOG_ORDER:
        if name not in kept:
            continue
        counts = (
            kept[name]
            .agg(F.count("*").alias("n"), F.sum((~F.col("live")).cast("long")).alias("gone"))
            .first()
        )
        read, n, returned = layouts[name].rows, int(counts["n"]), int(counts["gone"] or 0)
        cleaning[f"{name}_rows_read"] = read
        cleaning[f"{name}_duplicate_rows_dropped"] = read - n
        if read - n:
            log.warning(
                "%s: dropped %d exact duplicate row(s) of %d (a row delivered twice)",
                files[name],
                read - n,
                read,
            )
        if name == "orders" and "quantity" in layouts[name].columns:
            cleaning["orders_returns_dropped"] = returned
            if returned:
                log.warning(
                    "%s: dropped %d order line(s) with quantity <= 0 (returns, cancellations)",
                    files[name],
                    returned,
                )
    return cleaning


def one_body(frame: Any, max_gap_days: float) -> bool:
    """Whether a log's times form one run with no gap over ``max_gap_days`` (the pandas check
    ``schemas.check_isolated_times``): the times fall into spans of that length from the
    earliest, and a gap can only lie between the last time of one non-empty span and the first
    of the next, so one row per non-empty span reaches the stage's process."""
    from pyspark.sql import functions as F

    gap = max(int(max_gap_days * 86400) * 10**9, 1)
    times = frame.where("live").select("at")
    base = times.agg(F.min("at")).first()[0]
    if base is None:
        return True
    spans = (
        times.groupBy(F.expr(f"(at - {int(base)}) div {gap}").alias("span"))
        .agg(F.min("at").alias("lo"), F.max("at").alias("hi"))
        .toPandas()
        .sort_values("span")
    )
    lo, hi = spans["lo"].to_numpy(np.int64), spans["hi"].to_numpy(np.int64)
    return not bool(((lo[1:] - hi[:-1]) > gap).any())


def logs_pass(kept: dict[str, Any], cleaning: dict[str, int], max_gap_days: float) -> bool:
    """The checks over whole logs: order lines left after returns, impression ids unique, each
    log's times in one body."""
    from pyspark.sql import functions as F

    orders_left = cleaning["orders_rows_read"] - cleaning["orders_duplicate_rows_dropped"]
    if orders_left - cleaning.get("orders_returns_dropped", 0) <= 0:
        return False
    shared = kept["impressions"].groupBy("impression_id").count().where(F.col("count") > 1)
    if shared.limit(1).count():
        return False
    return all(one_body(frame, max_gap_days) for frame in kept.values())


def product_keys(spark: Any, kept: dict[str, Any], catalogue: pd.DataFrame | None) -> pd.Series | None:
    """The product keys the logs name, each with the first time (ns) a log names it (None when
    the catalogue does not list one of them). Only keys the catalogue lists come to the stage's
    process (a catalogue's size), or without a catalogue the logs' products, the products table
    itself."""
    from pyspark.sql import functions as F

    named = [frame.where("live").select(F.col("product").alias("key"), "at") for frame in kept.values()]
    named.append(kept["impressions"].select(F.col("shown").alias("key"), "at"))
    keys = named[0]
    for more in named[1:]:
        keys = keys.unionAll(more)
    keys = keys.groupBy("key").agg(F.min("at").alias("at"))
    if catalogue is not None:
        listed = spark.createDataFrame(pd.DataFrame({"key": catalogue["product"].astype(str).to_numpy()}))
        if keys.join(F.broadcast(listed), "key", "left_anti").limit(1).count():
            return None
    found = keys.toPandas()
    return pd.Series(
        found["at"].to_numpy(np.int64).view("datetime64[ns]"), index=found["key"].to_numpy(object)
    )


def last_event_ns(kept: dict[str, Any]) -> int:
    from pyspark.sql import functions as F

    return max(
        int(v)
        for v in (frame.where("live").agg(F.max("at")).first()[0] for frame in kept.values())
        if v is not None
    )


def customer_ids(spark: Any, kept: dict[str, Any], folder: Path) -> tuple[Any, int]:
    """customer (key) -> cid, numbered in order of first appearance over the orders (after
    returns), then the impressions, then the interactions, as the pandas reader numbers them;
    and how many. Sorted by Spark into ranges; each range's first id is the rows before it."""
    from pyspark.sql import functions as F

    seen = None
    for name, frame in kept.items():
        rows = frame.where("live").select("customer", F.lit(LOG_ORDER[name]).alias("log"), "row")
        seen = rows if seen is None else seen.unionAll(rows)
    assert seen is not None
    firsts = seen.groupBy("customer").agg(F.min(F.struct("log", "row")).alias("first"))
    ordered = written(
        firsts.orderBy("first.log", "first.row")
        .withColumn("mid", F.monotonically_increasing_id())
        .withColumn("part", F.spark_partition_id().cast("long"))
        .select("customer", "mid", "part"),
        folder,
        "customers",
    )
    sizes = ordered.groupBy("part").count().toPandas().sort_values("part")
    starts = np.concatenate([[0], np.cumsum(sizes["count"].to_numpy(np.int64))[:-1]])
    offsets = spark.createDataFrame(pd.DataFrame({"part": sizes["part"].to_numpy(np.int64), "start": starts}))
    ids = ordered.join(F.broadcast(offsets), "part").select(
        "customer", (F.col("start") + F.col("mid") - F.shiftleft(F.col("part"), 33)).alias("cid")
    )
    return ids, int(sizes["count"].sum())


def coded(
    spark: Any, kept: dict[str, Any], products: pd.DataFrame, folder: Path
) -> tuple[dict[str, Any], int]:
    """The logs with integer ids (products: ``products``' ids of their keys; customers:
    :func:`customer_ids`), written under ``folder``; and the number of customers."""
    from pyspark.sql import functions as F

    customers, n_customers = customer_ids(spark, kept, folder)
    ids = F.broadcast(
        spark.createDataFrame(
            pd.DataFrame(
                {
                    "key": products["product_key"].astype(str).to_numpy(),
                    "pid": products["product_id"].to_numpy(np.int64),
                }
            )
        )
    )

    def product(frame: Any, column: str, name: str) -> Any:
        return frame.join(ids.withColumnRenamed("pid", name), F.col(column) == F.col("key")).drop("key")

    live = {name: frame.where("live").join(customers, "customer") for name, frame in kept.items()}
    out = {
        "orders": product(live["orders"], "product", "pid").select(
            "row", F.col("cid").alias("customer"), F.col("pid").alias("product"), "at"
        ),
        "impressions": product(
            product(live["impressions"], "product", "source_id"), "shown", "shown_id"
        ).select(
            "row",
            "impression_id",
            F.col("cid").alias("customer"),
            "source_id",
            "shown_id",
            F.col("at").alias("shown_at"),
        ),
    }
    if "interactions" in live:
        out["interactions"] = product(live["interactions"], "product", "pid").select(
            "row", F.col("cid").alias("customer"), F.col("pid").alias("product"), "kind", "at"
        )
    else:
        out["interactions"] = spark.createDataFrame([], NO_INTERACTIONS)
    return {name: written(frame, folder, f"{name}-coded") for name, frame in out.items()}, n_customers


def count_before_launch(
    spark: Any, kept: dict[str, Any], catalogue: pd.DataFrame, files: dict[str, str], cleaning: dict[str, int]
) -> None:
    """Orders and impressions dated before their product's catalogue ``launched_at``: counted and
    warned as the pandas reader does (kept)."""
    from pyspark.sql import functions as F

    launch = catalogue.drop_duplicates("product")[["product", "launched_at"]].dropna()
    launched = F.broadcast(
        spark.createDataFrame(
            pd.DataFrame(
                {
                    "key": launch["product"].astype(str).to_numpy(),
                    "launch_ns": launch["launched_at"].to_numpy("datetime64[ns]").view(np.int64),
                }
            ),
            "key string, launch_ns long",
        )
    )
    checks = {"orders": ("product",), "impressions": ("product", "shown")}
    for name, columns in checks.items():
        early = F.lit(False)
        frame = kept[name].where("live")
        for i, column in enumerate(columns):
            frame = frame.join(
                launched.withColumnRenamed("key", f"k{i}").withColumnRenamed("launch_ns", f"l{i}"),
                F.col(column) == F.col(f"k{i}"),
                "left",
            )
            early = early | (F.col(f"l{i}").isNotNull() & (F.col("at") < F.col(f"l{i}")))
        count = int(frame.where(early).count())
        cleaning[f"{name}_before_launch"] = count
        if count:
            log.warning(
                "%s: %d row(s) dated before their product's launched_at in the catalogue (kept, "
                "counted as %s_before_launch: check the catalogue's launch times)",
                files[name],
                count,
                name,
            )


def shown_customers_only(
    kept: dict[str, Any], folder: Path, files: dict[str, str], cleaning: dict[str, int]
) -> dict[str, Any]:
    """The interactions of customers the impressions log shows something to, the others no
    longer live: counted and warned as the pandas reader does (they label no impression)."""
    from pyspark.sql import functions as F

    if "interactions" not in kept:
        cleaning["interactions_of_customers_never_shown_dropped"] = 0
        return kept
    shown = (
        kept["impressions"].where("live").select("customer").distinct().withColumn("was_shown", F.lit(True))
    )
    marked = kept["interactions"].join(shown, "customer", "left")
    unshown = marked.where(F.col("live") & F.col("was_shown").isNull())
    counts = unshown.agg(F.count("*").alias("n"), F.countDistinct("customer").alias("who")).first()
    dropped, who = int(counts["n"]), int(counts["who"])
    cleaning["interactions_of_customers_never_shown_dropped"] = dropped
    if not dropped:
        return kept
    log.warning(
        "%s: dropped %d interaction(s) of %d customer(s) never shown a recommendation in the "
        "impressions log: they label no impression",
        files["interactions"],
        dropped,
        who,
    )
    live = marked.withColumn("live", F.col("live") & F.col("was_shown").isNotNull()).drop("was_shown")
    return {**kept, "interactions": written(live, folder, "interactions-shown")}
