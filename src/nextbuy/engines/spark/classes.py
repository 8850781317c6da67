"""A class-data archive for the Spark engine's JVMs (HotSpot's AppCDS): the classes a Spark job
loads, parsed and verified once by ``make spark``, mapped from one file by every later JVM.

A JVM that starts a local session and runs a first small job loads about twenty thousand classes,
twelve thousand of them from Spark's jars (``-Xlog:class+load``); with the archive that start took
3.0 CPU-seconds instead of 5.6 here, and the
engine tests' JVMs 115 instead of 132 (measured side by side with process accounting). The
archive belongs to this environment (this pyspark's jars, this Java): it lives in the venv,
``python -m nextbuy.engines.spark.classes`` writes it again, and a JVM that finds it stale or
missing maps nothing and runs as before. Where it lives and the flag that maps it are the
session's (``session.ARCHIVE``, ``session.with_archive``): every session needs them, and this
module needs a session to write the archive.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from nextbuy.config import SparkConfig
from nextbuy.engines.spark.session import ARCHIVE, session


def _load_the_engines_classes(spark: Any, folder: Path) -> None:
    """What the stages do on Spark, small: parquet both ways, Arrow both ways, a pandas
    function per group, joins, aggregates and a window (their code generation included)."""
    import pandas as pd
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    # times as the engine reads pandas' timestamps: int64 nanoseconds (session.FIXED_CONF)
    frame = pd.DataFrame({"source": range(400), "target": [i % 37 for i in range(400)]})
    frame["at"] = (pd.Timestamp("2026-01-01") + pd.to_timedelta(frame["source"], unit="h")).astype("int64")
    frame.to_parquet(folder / "edges.parquet", index=False)
    edges = spark.read.parquet(str(folder / "edges.parquet"))
    products = spark.createDataFrame(pd.DataFrame({"target": range(37), "price": [1.5] * 37}))
    priced = products.withColumnRenamed("price", "p")
    joined = edges.join(F.broadcast(products), "target").join(priced, "target")
    ranked = joined.withColumn("rank", F.row_number().over(Window.partitionBy("target").orderBy("at")))
    totals = ranked.groupBy("target").agg(F.count("*").alias("n"), F.sum("price").alias("spent"))
    totals.write.mode("overwrite").parquet(str(folder / "totals"))

    def per_group(rows: pd.DataFrame) -> pd.DataFrame:
        return rows.assign(share=rows["price"] / rows["price"].sum())

    schema = "target long, source long, at long, price double, p double, rank int, share double"
    ranked.groupBy("target").applyInPandas(per_group, schema).toPandas()
    ranked.mapInPandas(lambda batches: (b.head(1) for b in batches), ranked.schema).count()


def build(archive: Path = ARCHIVE) -> Path:
    """Run a local session that loads the engine's classes and dump them into ``archive`` as its
    JVM exits (the file appears whole: written beside it, then renamed)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(archive.name + ".partial")
    partial.unlink(missing_ok=True)
    # The engine's own session (its daemon, Arrow, fixed settings), small, dumping at exit.
    # (-Xlog:cds=off: the dump names every class it leaves out, a few hundred lines of warnings)
    dumping = f"-XX:ArchiveClassesAtExit={partial} -Xlog:cds=off"
    dump = {"spark.driver.extraJavaOptions": dumping, "spark.ui.enabled": "false"}
    cfg = SparkConfig(master="local[2]", batch_rows=10_000, dashboard_rows=1_000, conf=dump)
    spark = session(cfg)
    jvm = spark.sparkContext._gateway.proc  # pyspark keeps the JVM's process here
    try:
        with tempfile.TemporaryDirectory() as folder:
            _load_the_engines_classes(spark, Path(folder))
    finally:
        spark.stop()
        jvm.stdin.close()  # the gateway JVM exits at the end of its stdin, dumping the archive
        exited = jvm.wait(timeout=600)
    if exited != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"the JVM exited {exited} without writing {partial}")
    os.replace(partial, archive)
    return archive


if __name__ == "__main__":
    print(f"Spark class archive: {build()}")
